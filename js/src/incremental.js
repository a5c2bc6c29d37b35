// Renders one message's markdown into the DOM while it streams, in linear total work and
// without long tasks.
//
// The text is cut at "stable" boundaries: a blank line outside any open code fence or HTML
// block, confirmed by a following unindented line that does not start a list item (so list
// items and their continuations stay together). The markdown before such a boundary renders
// exactly as it would inside the whole text, so it is rendered once, appended to `blocks`
// and never touched again; at the end only what follows the last boundary is rendered.
//
// A long stretch without a boundary (one huge paragraph, a long code block) would make the
// re-rendered tail grow without limit. Past SOFT_CHARS it is cut at line ends instead, into
// provisional "soft" segments that are rendered once for display. When a real boundary (or
// the end) arrives, the exact rendering of that stretch is built off-screen in pieces of
// about CHUNK_CHARS, a few milliseconds per frame, then swapped in for the soft segments.
//
// That exact rendering never hands marked more than about LARGE_CHARS at once: the text is
// lexed block group by block group, and a single larger block (a huge table, paragraph or
// code block) is rendered in slices of SLICE_CHARS, nearly exactly (an inline construct
// cut across two slices may not render). A large table is shown as parts of about
// TABLE_PART_CHARS, each a table of its own with the same fixed column widths, that the
// browser lays out only near the viewport: laying out thousands of rows at once took it
// seconds. Long provisional text is likewise shown in parts (see `plainParts`).
// Whatever fails to render (a RangeError from marked's recursion, anything else) is shown
// as plain text, for that part of that message only.
//
// Every piece of HTML goes through the sanitizer, whichever path rendered it.

import { highlightCode, markdownToHtml, markdownTokens, tokensToHtml } from "./markdown.js";

/** @typedef {import("./sanitize.js").Sanitize} Sanitize */
/** @typedef {import("marked").Token} Token */

/**
 * @typedef {object} MarkdownViewOptions
 * @property {Sanitize} sanitize
 * @property {() => void} onRender    called after each render (counters, auto-scroll)
 */

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

const FENCE = /^ {0,3}(`{3,}|~{3,})/;
const LIST_ITEM = /^ {0,3}(?:[-*+]|\d{1,9}[.)])(?:[ \t]|$)/;
/** HTML blocks that, unlike others, do not end at a blank line: [opening, end condition]. */
const HTML_BLOCKS = /** @type {[RegExp, RegExp][]} */ ([
  [/^ {0,3}<!--/, /-->/],
  [/^ {0,3}<(?:script|pre|style|textarea)(?:[\s>]|$)/i, /<\/(?:script|pre|style|textarea)>/i],
  [/^ {0,3}<\?/, /\?>/],
  [/^ {0,3}<!\[CDATA\[/, /\]\]>/],
  [/^ {0,3}<![A-Za-z]/, />/],
]);
/** A table's second line. */
const TABLE_DELIMITER = /^ {0,3}\|?(?: *:?-+:? *\|)+ *(?::?-+:? *)?$|^ {0,3}\|? *:?-+:? *\|? *$/;
/** A line that ends a table: a block that interrupts its rows (marked's rule, roughly). */
const TABLE_END = /^(?: {4}|\t| {0,3}(?:>|#{1,6}(?:\s|$)|`{3}|~{3}|<|[-*+][ \t]|1[.)][ \t]|(?:[-*_][ \t]*){3,}$))/;
/** A link reference definition: it changes links anywhere in the text, before it too. */
const LINK_DEFINITION = /^ {0,3}\[[^\]\n]+\]:/m;

/** Uncommitted text beyond this is cut into soft segments. */
export const SOFT_CHARS = 2000;
/** The most text rendered as markdown in one go (a commit, a soft segment). */
export const SYNC_CHARS = 8000;
/**
 * The most provisional text rendered as markdown: longer (a burst of text that arrived
 * within one frame, a long reply loaded complete) is shown as it is until its exact
 * rendering replaces it. The tail never grows past it (see `scan`).
 */
export const PROVISIONAL_CHARS = 2 * SOFT_CHARS;
/** The size of one piece of an exact rendering built over several frames. */
export const CHUNK_CHARS = 3000;
/** A block larger than this is rendered in slices instead of being lexed at once. */
export const LARGE_CHARS = 16_000;
/** The size of one slice of a large block. */
export const SLICE_CHARS = 4000;
/** The size of one slice of a large table (sanitizing its many cells is costly)... */
export const TABLE_SLICE_CHARS = 1000;
/** ...and of one part of it, laid out at once when it comes near the viewport. */
export const TABLE_PART_CHARS = 4000;
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
/** Plain text's estimated characters per line and line height (a size estimate only). */
const PLAIN_LINE_CHARS = 80;
const PLAIN_LINE_EM = 1.3;
/** Off-screen building per animation frame, shared by every message on the page. */
const FRAME_BUDGET_MS = 8;

const budget = { frame: /** @type {number | undefined} */ (undefined), used: 0 };

/**
 * What scanning lines needs to remember between them.
 * @typedef {object} ScanState
 * @property {string | null} fence     the open code fence's marker
 * @property {RegExp | null} htmlEnd   the end condition of the open HTML block
 * @property {number} candidate        end of a blank line that may become a boundary, or -1
 */

/**
 * Reads one complete line (without its newline) that ends the text at `next`.
 * @param {ScanState} state
 * @param {string} line
 * @param {number} next   the offset just after the line's newline
 * @returns {number}  a boundary this line confirms, or -1
 */
function scanLine(state, line, next) {
  if (state.fence !== null) {
    const closing = line.trim();
    if (closing.length >= state.fence.length && closing === state.fence[0].repeat(closing.length)) state.fence = null;
    return -1;
  }
  if (state.htmlEnd !== null) {
    if (state.htmlEnd.test(line)) state.htmlEnd = null;
    return -1;
  }
  if (line.trim() === "") {
    state.candidate = next;
    return -1;
  }
  let boundary = -1;
  if (state.candidate !== -1) {
    if (!/^[ \t]/.test(line) && !LIST_ITEM.test(line)) boundary = state.candidate;
    state.candidate = -1;
  }
  const open = FENCE.exec(line);
  if (open) state.fence = open[1];
  else {
    for (const [start, end] of HTML_BLOCKS) {
      const m = start.exec(line);
      if (m) {
        if (!end.test(line.slice(m[0].length))) state.htmlEnd = end;
        break;
      }
    }
  }
  return boundary;
}

/**
 * Cuts complete markdown into ranges that each render exactly as inside the whole text:
 * groups of blocks of about `size` characters, and every block larger than LARGE_CHARS
 * alone (marked `large`). A text with a link definition stays whole when it is not large
 * itself: the definition may be used by any block.
 * @param {string} text
 * @param {number} size
 * @returns {{ start: number, end: number, large: boolean }[]}
 */
export function blockRanges(text, size) {
  if (text.length <= size || (text.length <= LARGE_CHARS && LINK_DEFINITION.test(text))) {
    return [{ start: 0, end: text.length, large: false }];
  }
  /** @type {ScanState} */
  const state = { fence: null, htmlEnd: null, candidate: -1 };
  const cuts = [];
  for (let pos = 0; pos < text.length; ) {
    let nl = text.indexOf("\n", pos);
    if (nl === -1) nl = text.length;
    const found = scanLine(state, text.slice(pos, nl), nl + 1);
    if (found !== -1) cuts.push(found);
    pos = nl + 1;
  }
  cuts.push(text.length);
  const ranges = [];
  let start = 0;
  let previous = 0;
  for (const cut of cuts) {
    if (cut - previous > LARGE_CHARS) {
      if (previous > start) ranges.push({ start, end: previous, large: false });
      ranges.push({ start: previous, end: cut, large: true });
      start = cut;
    } else {
      if (cut - start > LARGE_CHARS && previous > start) {
        ranges.push({ start, end: previous, large: false });
        start = previous;
      }
      if (cut - start >= size) {
        ranges.push({ start, end: cut, large: false });
        start = cut;
      }
    }
    previous = cut;
  }
  if (start < text.length) ranges.push({ start, end: text.length, large: false });
  return ranges;
}

export class MarkdownView {
  /**
   * @param {HTMLElement} container   the message's `.r3nb-content`
   * @param {MarkdownViewOptions} options
   */
  constructor(container, options) {
    this.container = container;
    this.options = options;
    const doc = container.ownerDocument;
    this.doc = doc;
    this.win = doc.defaultView;
    this.blocks = doc.createElement("div");
    this.soft = doc.createElement("div");
    this.tail = doc.createElement("div");
    this.blocks.className = "r3nb-blocks";
    this.soft.className = "r3nb-soft";
    this.tail.className = "r3nb-tail";
    /** Image URLs the person chose to load in this message: kept across re-renders. */
    this.loadedImages = new Set();
    this.frame = 0;
    /** Earliest time the next tail render may run; see `onFrame`. */
    this.notBefore = 0;
    this.text = "";
    this.finished = false;
    this.stableEnd = 0; // text[0:stableEnd] is rendered into `blocks`, never touched again
    this.queuedEnd = 0; // text[stableEnd:queuedEnd] is being rendered exactly by `jobs`
    this.softEnd = 0; // text[stableEnd:softEnd] is shown by soft segments; the tail follows
    /** @type {string | null} the open fence at softEnd (the tail starts inside it) */
    this.softFence = null;
    /** @type {Job[]} */
    this.jobs = [];
    this.scanPos = 0; // start of the first line not yet scanned
    /** @type {string | null} the open fence's marker ("```", "~~~~", ...) at scanPos */
    this.fence = null;
    /** @type {RegExp | null} the end condition of the open HTML block at scanPos */
    this.htmlEnd = null;
    this.candidate = -1; // end of a blank line that may become the next boundary
    this.reset("");
  }

  /** @param {string} text */
  reset(text) {
    this.text = text;
    this.finished = false;
    this.stableEnd = 0;
    this.queuedEnd = 0;
    this.softEnd = 0;
    this.softFence = null;
    this.jobs = [];
    this.scanPos = 0;
    this.fence = null;
    this.htmlEnd = null;
    this.candidate = -1;
    this.blocks.replaceChildren();
    this.soft.replaceChildren();
    this.tail.replaceChildren();
    this.container.replaceChildren(this.blocks, this.soft, this.tail);
  }

  /**
   * Streaming: more text arrived. Rendering happens on the next animation frame.
   * @param {string} delta
   */
  append(delta) {
    if (!delta) return;
    this.text += delta;
    this.finished = false;
    this.schedule();
  }

  /**
   * Streaming: the text was replaced (a resync); start over incrementally.
   * @param {string} text
   */
  replace(text) {
    this.cancel();
    this.reset(text);
    this.schedule();
  }

  /**
   * The message ended (or was loaded complete). What is already rendered exactly stays;
   * the rest is rendered now when short, else built over the next frames (the soft
   * segments show it meanwhile), so that no single task grows with the reply.
   * @param {string} text
   */
  finish(text) {
    this.cancel();
    if (LINK_DEFINITION.test(text) || !text.startsWith(this.text.slice(0, this.softEnd))) {
      // A link definition can change any earlier block: render everything again.
      this.reset("");
    }
    this.text = text;
    this.finished = true;
    this.scanPos = text.length;
    this.candidate = -1;
    if (text.length > this.queuedEnd) this.commit(text.length);
    this.tail.replaceChildren();
    this.options.onRender();
    if (this.jobs.length) this.schedule();
  }

  /** Whether the DOM shows the final rendering (no soft segment, no pending piece). */
  get settled() {
    return this.finished && this.jobs.length === 0;
  }

  dispose() {
    this.cancel();
    this.jobs = [];
  }

  schedule() {
    if (this.frame || !this.win) return;
    this.frame = this.win.requestAnimationFrame((time) => this.onFrame(time));
  }

  cancel() {
    if (this.frame && this.win) this.win.cancelAnimationFrame(this.frame);
    this.frame = 0;
  }

  /** @param {number} [time]  the frame's timestamp (shared by every callback of a frame) */
  onFrame(time) {
    this.frame = 0;
    const now = performance.now();
    let rendered = false;
    let waiting = false;
    if (!this.finished) {
      // Each tail render waits four times as long as the previous one took, so that
      // rendering never takes more than a fifth of the time whatever the tail holds.
      if (now < this.notBefore) waiting = true;
      else {
        this.scan();
        this.renderTail();
        this.notBefore = performance.now() + Math.min((performance.now() - now) * 4, 1000);
        rendered = true;
      }
    }
    if (this.jobs.length && this.runJobs(time)) rendered = true;
    if (rendered) this.options.onRender();
    if (waiting || this.jobs.length) this.schedule();
  }

  /** Scans the lines that arrived since the last frame; commits and cuts what it can. */
  scan() {
    const text = this.text;
    let boundary = -1;
    for (let nl = text.indexOf("\n", this.scanPos); nl !== -1; nl = text.indexOf("\n", this.scanPos)) {
      const line = text.slice(this.scanPos, nl);
      this.scanPos = nl + 1;
      const found = scanLine(this, line, this.scanPos);
      if (found !== -1) boundary = found;
    }
    // The first character of the unfinished line is enough to confirm a boundary (unless it
    // may begin a list item): waiting for its newline would keep a whole extra paragraph in
    // the re-rendered tail.
    if (this.candidate !== -1 && this.fence === null && this.htmlEnd === null && this.scanPos < text.length && /^[^\s\-*+\d]/.test(text[this.scanPos])) {
      boundary = this.candidate;
      this.candidate = -1;
    }
    // A boundary inside the soft segments is skipped: the exact rendering just covers more.
    if (boundary > this.queuedEnd && boundary >= this.softEnd) this.commit(boundary);
    if (this.candidate !== -1) return; // lines after a blank one: they may yet end a block
    if (this.scanPos - this.softEnd >= SOFT_CHARS) {
      this.addSoft(this.scanPos, this.fence);
    } else if (text.length - this.softEnd >= 2 * SOFT_CHARS) {
      // One very long line: cut it at a space (a code point boundary in any case).
      let cut = text.lastIndexOf(" ", text.length - 1);
      if (cut <= this.softEnd + SOFT_CHARS) cut = text.length;
      else cut += 1;
      if (cut === text.length && /[\uD800-\uDBFF]/.test(text[cut - 1])) cut -= 1;
      this.addSoft(cut, this.fence);
    }
  }

  /**
   * text[queuedEnd:end] is final: render it into `blocks`, now when it is short and nothing
   * is pending, else in pieces over the next frames.
   * @param {number} end
   */
  commit(end) {
    if (this.jobs.length === 0 && this.softEnd === this.stableEnd && end - this.stableEnd <= SYNC_CHARS) {
      this.blocks.append(this.render(this.text.slice(this.stableEnd, end)));
      this.stableEnd = this.queuedEnd = this.softEnd = end;
      this.softFence = null;
      return;
    }
    if (end > this.softEnd) this.addSoft(end, null);
    this.jobs.push({ start: this.queuedEnd, end, steps: null, next: 0, fragment: this.doc.createDocumentFragment(), paragraph: null, table: null, code: null });
    this.queuedEnd = end;
  }

  /**
   * Shows text[softEnd:end] as a provisional segment, rendered once.
   * @param {number} end
   * @param {string | null} fenceAtEnd   the code fence still open at `end`
   */
  addSoft(end, fenceAtEnd) {
    const segment = this.doc.createElement("div");
    segment.dataset.end = String(end);
    this.fillProvisional(segment, "r3nb-soft-segment", this.text.slice(this.softEnd, end), this.softFence);
    this.soft.append(segment);
    this.softEnd = end;
    this.softFence = fenceAtEnd;
  }

  renderTail() {
    this.fillProvisional(this.tail, "r3nb-tail", this.text.slice(this.softEnd), this.softFence);
  }

  /**
   * Renders provisional text: markdown, or plain text when it continues an open code block
   * (its opening line is in an earlier segment) or is longer than PROVISIONAL_CHARS.
   * @param {HTMLElement} el
   * @param {string} cls
   * @param {string} text
   * @param {string | null} inFence
   */
  fillProvisional(el, cls, text, inFence) {
    const code = inFence !== null;
    const plain = code || text.length > PROVISIONAL_CHARS;
    el.className = plain ? `${cls} r3nb-plain${code ? " r3nb-plain-code" : ""}` : cls;
    el.replaceChildren(...(plain ? this.plainParts(text) : [this.render(text)]));
  }

  /**
   * Builds pending exact renderings within this frame's share of the budget.
   * @param {number | undefined} time
   * @returns {boolean} whether the DOM changed
   */
  runJobs(time) {
    if (time === undefined || time !== budget.frame) {
      budget.frame = time;
      budget.used = 0;
    }
    const start = performance.now();
    let changed = false;
    while (this.jobs.length) {
      const job = this.jobs[0];
      try {
        if (!job.steps) job.steps = this.plan(this.text.slice(job.start, job.end));
        while (job.next < job.steps.length) {
          if (budget.used + (performance.now() - start) >= FRAME_BUDGET_MS) {
            budget.used += performance.now() - start;
            return changed;
          }
          job.steps[job.next++](job);
        }
      } catch (err) {
        // Never retried: this stretch of text is shown as it is, the rest renders on.
        console.warn("r3nb: a reply could not be rendered; showing it as plain text", err);
        job.fragment.replaceChildren(this.plain(this.text.slice(job.start, job.end)));
        job.steps = [];
        job.next = 0;
      }
      this.jobs.shift();
      for (const segment of Array.from(this.soft.children)) {
        if (Number(/** @type {HTMLElement} */ (segment).dataset.end) <= job.end) segment.remove();
      }
      this.blocks.append(job.fragment);
      this.stableEnd = job.end;
      changed = true;
    }
    budget.used += performance.now() - start;
    return changed;
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

  /** @param {string} html */
  sanitize(html) {
    return this.options.sanitize(html, { loadedImages: this.loadedImages });
  }

  /**
   * Text shown as it is (whitespace kept): what could not be rendered, or not yet.
   * @param {string} text
   */
  plain(text) {
    const el = this.doc.createElement("div");
    el.className = "r3nb-plain";
    el.append(...this.plainParts(text));
    return el;
  }

  /**
   * Plain text as nodes: one text node, or for a long text parts of about SLICE_CHARS in
   * `content-visibility: auto` blocks (laying out 200 KB of text at once takes the
   * browser a few hundred milliseconds; parts off-screen are skipped).
   * @param {string} text
   * @returns {(string | Node)[]}
   */
  plainParts(text) {
    if (text.length <= 2 * SLICE_CHARS) return [text];
    return slices(text).map((piece) => {
      const part = this.doc.createElement("div");
      part.className = "r3nb-plain-part";
      let lineCount = 0;
      for (const line of piece.replace(/\n$/, "").split("\n")) lineCount += Math.max(1, Math.ceil(line.length / PLAIN_LINE_CHARS));
      part.style.setProperty("contain-intrinsic-height", `auto ${(lineCount * PLAIN_LINE_EM).toFixed(1)}em`);
      part.textContent = piece;
      return part;
    });
  }

  /**
   * Markdown as a DOM fragment; plain text when it cannot be rendered (marked's recursion
   * can still overflow the stack on deeply nested inline markup).
   * @param {string} markdown
   * @returns {DocumentFragment}
   */
  render(markdown) {
    try {
      return this.sanitize(markdownToHtml(markdown));
    } catch (err) {
      console.warn("r3nb: a reply could not be rendered; showing it as plain text", err);
      const fragment = this.doc.createDocumentFragment();
      fragment.append(this.plain(markdown));
      return fragment;
    }
  }
}

/**
 * `text` cut into pieces of about SLICE_CHARS, at line ends where there are any, else at
 * spaces, never inside a surrogate pair.
 * @param {string} text
 * @returns {string[]}
 */
function slices(text) {
  const pieces = [];
  let start = 0;
  while (text.length - start > SLICE_CHARS) {
    const limit = start + SLICE_CHARS;
    let cut = text.lastIndexOf("\n", limit) + 1;
    if (cut <= start + SLICE_CHARS / 2) cut = text.lastIndexOf(" ", limit) + 1;
    if (cut <= start + SLICE_CHARS / 2) cut = /[\uD800-\uDBFF]/.test(text[limit - 1]) ? limit - 1 : limit;
    pieces.push(text.slice(start, cut));
    start = cut;
  }
  if (start < text.length) pieces.push(text.slice(start));
  return pieces;
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
