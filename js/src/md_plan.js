// The exact rendering of a stretch of final markdown, as steps small enough to run a
// few per animation frame (incremental.js runs them within a shared frame budget). A
// stretch is lexed block group by block group; a single block too large to hand marked
// at once (a huge table, paragraph or code block) is rendered in slices, nearly exactly
// (an inline construct cut across two slices may not render). A large table is shown as
// parts that the browser lays out only near the viewport: laying out thousands of rows
// at once took it seconds.

import { highlightCode, markdownTokens, tokensToHtml } from "./markdown.js";
import { CHUNK_CHARS, FENCE, TABLE_DELIMITER, TABLE_END, TABLE_PART_CHARS, TABLE_SLICE_CHARS, blockRanges, slices } from "./md_blocks.js";

/** @typedef {import("marked").Token} Token */

/**
 * An exact rendering of text[start:end] being built off-screen.
 * @typedef {object} Job
 * @property {number} start
 * @property {number} end
 * @property {((job: Job) => void)[] | null} steps   null until the text is lexed
 * @property {number} next
 * @property {DocumentFragment} fragment
 * @property {Element | null} paragraph   the <p> a long paragraph's pieces go into
 * @property {Element | null} table       the wrapper a large table's parts go into
 * @property {Element | null} code        the <code> a large code block's slices go into
 */

/** Rows of a large table its column widths are estimated from. */
const LAYOUT_ROWS = 100;
/** Columns' widths in `ch`: at least, and at most (longer cells wrap). */
const MIN_COLUMN_CH = 3;
const MAX_COLUMN_CH = 40;
/** A cell's horizontal padding and border (widget.css), in px. */
const CELL_PX = 17;
/** A table row's line, and its padding and border, in em (a size estimate only). */
const ROW_LINE_EM = 1.3;
const ROW_EXTRA_EM = 0.4;

export class Planner {
  /**
   * @param {Document} doc
   * @param {(html: string) => DocumentFragment} sanitize   the message's sanitizer
   */
  constructor(doc, sanitize) {
    this.doc = doc;
    this.sanitize = sanitize;
  }

  /**
   * The steps of an exact rendering of `markdown`: one per range of blocks, which lexes
   * it when its turn comes and inserts the steps that render it.
   * @param {string} markdown
   * @returns {((job: Job) => void)[]}
   */
  plan(markdown) {
    return blockRanges(markdown, CHUNK_CHARS).map(({ start, end, large }) => {
      const text = markdown.slice(start, end);
      return (job) => {
        job.paragraph = job.table = job.code = null;
        const steps = large ? this.planLarge(text) : this.planTokens(markdownTokens(text));
        /** @type {((job: Job) => void)[]} */ (job.steps).splice(job.next, 0, ...steps);
      };
    });
  }

  /**
   * Groups block tokens into steps of about CHUNK_CHARS; a long paragraph alone, by groups
   * of its inline tokens.
   * @param {Token[]} tokens
   * @returns {((job: Job) => void)[]}
   */
  planTokens(tokens) {
    /** @type {((job: Job) => void)[]} */
    const steps = [];
    /** @type {Token[]} */
    let group = [];
    let size = 0;
    const flush = () => {
      if (!group.length) return;
      const tokens = group;
      steps.push((job) => job.fragment.append(this.sanitize(tokensToHtml(tokens))));
      group = [];
      size = 0;
    };
    for (const token of tokens) {
      if (token.type === "paragraph" && token.raw.length > CHUNK_CHARS && token.tokens && token.tokens.length > 1) {
        flush();
        this.planParagraph(/** @type {import("marked").Tokens.Paragraph} */ (token), steps);
        continue;
      }
      group.push(token);
      size += token.raw.length;
      if (size >= CHUNK_CHARS) flush();
    }
    flush();
    return steps;
  }

  /**
   * A long paragraph: one <p>, filled by groups of its inline tokens (each renders to
   * balanced HTML on its own; together they are the paragraph's HTML).
   * @param {import("marked").Tokens.Paragraph} token
   * @param {((job: Job) => void)[]} steps
   */
  planParagraph(token, steps) {
    const inline = token.tokens;
    let start = 0;
    let size = 0;
    for (let i = 0; i < inline.length; i++) {
      size += inline[i].raw.length;
      if (size < CHUNK_CHARS && i < inline.length - 1) continue;
      const part = { ...token, tokens: inline.slice(start, i + 1) };
      const first = start === 0;
      steps.push((job) => {
        const fragment = this.sanitize(tokensToHtml([part]));
        if (first || !job.paragraph) {
          job.paragraph = fragment.firstElementChild;
          job.fragment.append(fragment);
        } else {
          const p = fragment.firstElementChild;
          if (p) job.paragraph.append(...Array.from(p.childNodes));
        }
      });
      start = i + 1;
      size = 0;
    }
  }

  /**
   * One block too large to lex at once, in slices: a fenced code block, a table, or any
   * other text cut at line ends (a paragraph cut in two stays one <p>).
   * @param {string} text
   * @returns {((job: Job) => void)[]}
   */
  planLarge(text) {
    const lines = text.split("\n", 2);
    if (FENCE.test(lines[0])) return this.planCode(text);
    if (lines.length === 2 && lines[0].includes("|") && TABLE_DELIMITER.test(lines[1])) return this.planTable(text);
    return this.planSlices(text);
  }

  /**
   * A large fenced code block: its text added to one <code> in slices, unhighlighted.
   * @param {string} text   starts with the opening fence
   * @returns {((job: Job) => void)[]}
   */
  planCode(text) {
    const firstEnd = text.indexOf("\n");
    const open = /** @type {RegExpExecArray} */ (FENCE.exec(text));
    const marker = open[1];
    const lang = text.slice(open[0].length, firstEnd).trim().split(/\s/)[0];
    let end = text.length; // the closing fence's line, or the end
    let after = text.length; // what follows the closing fence's line
    for (let pos = firstEnd + 1; pos < text.length; ) {
      let nl = text.indexOf("\n", pos);
      if (nl === -1) nl = text.length;
      const closing = text.slice(pos, nl).trim();
      if (closing.length >= marker.length && closing === marker[0].repeat(closing.length)) {
        end = pos;
        after = nl + 1;
        break;
      }
      pos = nl + 1;
    }
    const code = text.slice(firstEnd + 1, end).replace(/\n$/, "");
    /** @type {((job: Job) => void)[]} */
    const steps = [(job) => {
      const fragment = this.sanitize(`<pre>${highlightCode("", lang, false)}</pre>`);
      job.code = fragment.querySelector("code");
      job.fragment.append(fragment);
    }];
    for (const piece of slices(code)) steps.push((job) => job.code?.append(piece));
    if (after < text.length) steps.push(...this.planSlices(text.slice(after)));
    return steps;
  }

  /**
   * A large table: its rows lexed in slices, each slice one part of the table. Laying out
   * thousands of rows at once takes the browser seconds, so every part is a table of its
   * own in a `content-visibility: auto` block (the browser skips the parts off-screen),
   * with fixed column widths estimated from the first rows so that the parts line up; the
   * header is shown once, in the first part. All parts share one horizontal scroller.
   * @param {string} text   starts with the header and delimiter rows
   * @returns {((job: Job) => void)[]}
   */
  planTable(text) {
    const lines = text.split("\n");
    const head = `${lines[0]}\n${lines[1]}\n`;
    let last = 2;
    while (last < lines.length && lines[last].trim() !== "" && !TABLE_END.test(lines[last])) last++;
    const widths = columnWidths([lines[0], ...lines.slice(2, Math.min(last, 2 + LAYOUT_ROWS))]);
    /** @type {((job: Job) => void)[]} */
    const steps = [];
    /** The rows from `i` on, up to about `size` characters (at least one row). */
    const take = (/** @type {number} */ i, /** @type {number} */ end, /** @type {number} */ size) => {
      let j = i;
      for (let chars = 0; j < end && (j === i || chars + lines[j].length < size); j++) chars += lines[j].length + 1;
      return j;
    };
    for (let i = 2; i < last; ) {
      const partEnd = take(i, last, TABLE_PART_CHARS);
      const partRows = lines.slice(i, partEnd);
      for (let k = i; k < partEnd; ) {
        const sliceEnd = take(k, partEnd, TABLE_SLICE_CHARS);
        const rows = lines.slice(k, sliceEnd).join("\n");
        const startsPart = k === i;
        steps.push((job) => {
          const fragment = this.sanitize(tokensToHtml(markdownTokens(head + rows)));
          const wrap = fragment.firstElementChild;
          const table = wrap?.querySelector("table");
          if (!wrap || !table) {
            job.fragment.append(fragment);
            job.table = null;
            return;
          }
          const body = startsPart ? null : job.table?.lastElementChild?.querySelector("tbody");
          const rowsBody = table.querySelector("tbody");
          if (body && rowsBody) {
            body.append(...Array.from(rowsBody.children));
            wrap.remove();
          } else if (job.table) {
            table.querySelector("thead")?.remove();
            job.table.append(this.tablePart(table, widths, partRows));
            wrap.remove();
          } else {
            wrap.append(this.tablePart(table, widths, partRows));
            job.fragment.append(wrap);
            job.table = wrap;
          }
          // Anything after the table (marked ended it earlier than expected): later rows
          // start a table of their own after it.
          if (fragment.firstElementChild || fragment.textContent?.trim()) {
            job.table = null;
            job.fragment.append(fragment);
          }
        });
        k = sliceEnd;
      }
      i = partEnd;
    }
    const rest = lines.slice(last).join("\n");
    if (rest.trim()) steps.push(...this.planSlices(rest));
    return steps;
  }

  /**
   * One part of a large table: `table` in a block the browser lays out only near the
   * viewport, sized meanwhile from its number of rows and their length.
   * @param {HTMLTableElement} table
   * @param {number[]} widths   columns' widths in `ch`
   * @param {string[]} rows     the part's rows as markdown
   */
  tablePart(table, widths, rows) {
    const part = this.doc.createElement("div");
    part.className = "r3nb-table-part";
    const colgroup = this.doc.createElement("colgroup");
    for (const width of widths) {
      const col = this.doc.createElement("col");
      col.style.width = `calc(${width}ch + ${CELL_PX}px)`;
      colgroup.append(col);
    }
    table.prepend(colgroup);
    const total = widths.reduce((a, b) => a + b, 0);
    part.style.width = `calc(${total}ch + ${widths.length * CELL_PX + 2}px)`;
    // Each row takes at least one line; a cell longer than its column wraps.
    let lineCount = 0;
    for (const row of rows) {
      const cells = splitRow(row);
      lineCount += Math.max(1, ...widths.map((w, c) => Math.ceil((cells[c]?.length ?? 0) / w)));
    }
    part.style.setProperty("contain-intrinsic-height", `auto ${(lineCount * ROW_LINE_EM + rows.length * ROW_EXTRA_EM).toFixed(1)}em`);
    part.append(table);
    return part;
  }

  /**
   * Any other large block: slices cut at line ends, each rendered on its own. A paragraph
   * that goes on into the next slice is continued in the same <p>.
   * @param {string} text
   * @returns {((job: Job) => void)[]}
   */
  planSlices(text) {
    return slices(text).map((piece, i, pieces) => (job) => {
      const tokens = markdownTokens(piece);
      if (job.paragraph && tokens[0]?.type === "paragraph" && !/^\s*\n/.test(piece)) {
        const p = this.sanitize(tokensToHtml(tokens.splice(0, 1))).firstElementChild;
        // Cut at a line end: the soft line break the whole paragraph would have there.
        if (pieces[i - 1].endsWith("\n")) job.paragraph.append("\n");
        if (p) job.paragraph.append(...Array.from(p.childNodes));
      }
      const fragment = this.sanitize(tokensToHtml(tokens));
      const last = fragment.lastElementChild;
      job.fragment.append(fragment);
      if (tokens.length) job.paragraph = last && last.tagName === "P" && !/\n\s*\n\s*$/.test(piece) ? last : null;
    });
  }
}

/**
 * A table row's cells (markdown, trimmed), split at unescaped pipes.
 * @param {string} row
 * @returns {string[]}
 */
function splitRow(row) {
  const cells = row.trim().replace(/^\|/, "").replace(/(?<!\\)\|$/, "").split(/(?<!\\)\|/);
  return cells.map((cell) => cell.trim());
}

/**
 * Fixed column widths for a table, in `ch`, from its header and first rows: each column
 * as wide as its longest cell, within MIN_COLUMN_CH..MAX_COLUMN_CH.
 * @param {string[]} rows   the header row, then body rows
 * @returns {number[]}
 */
function columnWidths(rows) {
  const widths = splitRow(rows[0]).map(() => MIN_COLUMN_CH);
  for (const row of rows) {
    const cells = splitRow(row);
    for (let c = 0; c < widths.length; c++) {
      widths[c] = Math.min(MAX_COLUMN_CH, Math.max(widths[c], cells[c]?.length ?? 0));
    }
  }
  return widths;
}
