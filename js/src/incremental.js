// Renders one message's markdown into the DOM while it streams, in linear total work and
// without long tasks.
//
// The text is cut at "stable" boundaries (md_blocks.js). The markdown before such a boundary renders
// exactly as it would inside the whole text, so it is rendered once, appended to `blocks`
// and never touched again; at the end only what follows the last boundary is rendered.
//
// A long stretch without a boundary (one huge paragraph, a long code block) would make the
// re-rendered tail grow without limit. Past SOFT_CHARS it is cut at line ends instead, into
// provisional "soft" segments that are rendered once for display. When a real boundary (or
// the end) arrives, the exact rendering of that stretch is built off-screen in pieces of
// about CHUNK_CHARS, a few milliseconds per frame, then swapped in for the soft segments.
//
// That exact rendering (md_plan.js) never hands marked more than about LARGE_CHARS at
// once; where the text may be cut, and the sizes of the pieces, are in md_blocks.js.
// Long provisional text is likewise shown in parts (see `plainParts`).
// Whatever fails to render (a RangeError from marked's recursion, anything else) is shown
// as plain text, for that part of that message only.
//
// Every piece of HTML goes through the sanitizer, whichever path rendered it.

import { markdownToHtml } from "./markdown.js";
import { LINK_DEFINITION, PROVISIONAL_CHARS, SLICE_CHARS, SOFT_CHARS, SYNC_CHARS, scanLine, slices } from "./md_blocks.js";
import { Planner } from "./md_plan.js";

export { LARGE_CHARS, TABLE_SLICE_CHARS, blockRanges } from "./md_blocks.js";

/** @typedef {import("./sanitize.js").Sanitize} Sanitize */
/** @typedef {import("./md_plan.js").Job} Job */

/**
 * @typedef {object} MarkdownViewOptions
 * @property {Sanitize} sanitize
 * @property {() => void} onRender    called after each render (counters, auto-scroll)
 * @property {(id: string) => string | null} [attachmentUrl]  where an attached image is served (its chip's thumbnail)
 */

/** Plain text's estimated characters per line and line height (a size estimate only). */
const PLAIN_LINE_CHARS = 80;
const PLAIN_LINE_EM = 1.3;
/** Off-screen building per animation frame, shared by every message on the page. */
const FRAME_BUDGET_MS = 8;

const budget = { frame: /** @type {number | undefined} */ (undefined), used: 0 };

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
    this.planner = new Planner(doc, (html) => this.sanitize(html));
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
        if (!job.steps) job.steps = this.planner.plan(this.text.slice(job.start, job.end));
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
