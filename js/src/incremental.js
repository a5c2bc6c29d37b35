// Renders one message's markdown into the DOM while it streams, in linear total work.
//
// The text is cut at the last "stable" boundary: a blank line outside any open code fence,
// confirmed by a following unindented line (so list continuations stay with their item).
// Blocks before it are rendered once and appended (the DOM only grows); only the tail after
// it is re-rendered, at most once per animation frame. When the message ends, the whole
// text is rendered once more so the final DOM is exactly the canonical rendering.

import { markdownToHtml } from "./markdown.js";

/** @typedef {import("./sanitize.js").Sanitize} Sanitize */

/**
 * @typedef {object} MarkdownViewOptions
 * @property {Sanitize} sanitize
 * @property {() => void} onRender    called after each render (counters, auto-scroll)
 */

const FENCE = /^ {0,3}(`{3,}|~{3,})/;

export class MarkdownView {
  /**
   * @param {HTMLElement} container   the message's `.r3nb-content`
   * @param {MarkdownViewOptions} options
   */
  constructor(container, options) {
    this.container = container;
    this.options = options;
    const doc = container.ownerDocument;
    this.win = doc.defaultView;
    this.blocks = doc.createElement("div");
    this.tail = doc.createElement("div");
    this.blocks.className = "r3nb-blocks";
    this.tail.className = "r3nb-tail";
    /** Image URLs the person chose to load in this message: kept across re-renders. */
    this.loadedImages = new Set();
    this.frame = 0;
    /** Earliest time the next tail render may run; see `onFrame`. */
    this.notBefore = 0;
    this.text = "";
    this.stableEnd = 0; // text[0:stableEnd] is rendered into `blocks`, never touched again
    this.scanPos = 0; // start of the first line not yet scanned
    /** @type {string | null} the open fence's marker ("```", "~~~~", ...) at scanPos */
    this.fence = null;
    this.candidate = -1; // end of a blank line that may become the next boundary
    this.reset("");
  }

  /** @param {string} text */
  reset(text) {
    this.text = text;
    this.stableEnd = 0;
    this.scanPos = 0;
    this.fence = null;
    this.candidate = -1;
    this.blocks.replaceChildren();
    this.tail.replaceChildren();
    this.container.replaceChildren(this.blocks, this.tail);
  }

  /**
   * Streaming: more text arrived. Rendering happens on the next animation frame.
   * @param {string} delta
   */
  append(delta) {
    if (!delta) return;
    this.text += delta;
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
   * The message ended (or was loaded complete): render the full text once, now.
   * @param {string} text
   */
  finish(text) {
    this.cancel();
    this.text = text;
    this.stableEnd = text.length;
    this.scanPos = text.length;
    this.fence = null;
    this.candidate = -1;
    this.blocks.replaceChildren(this.render(text));
    this.tail.replaceChildren();
    this.container.replaceChildren(this.blocks, this.tail);
    this.options.onRender();
  }

  dispose() {
    this.cancel();
  }

  schedule() {
    if (this.frame || !this.win) return;
    this.frame = this.win.requestAnimationFrame(() => this.onFrame());
  }

  cancel() {
    if (this.frame && this.win) this.win.cancelAnimationFrame(this.frame);
    this.frame = 0;
  }

  onFrame() {
    this.frame = 0;
    const now = performance.now();
    // A huge open code block makes each tail render expensive: wait long enough that
    // rendering never takes more than about a third of the time.
    if (now < this.notBefore) {
      this.schedule();
      return;
    }
    this.commitStableBlocks();
    this.tail.replaceChildren(this.render(this.text.slice(this.stableEnd)));
    const cost = performance.now() - now;
    this.notBefore = performance.now() + Math.min(cost * 2, 500);
    this.options.onRender();
  }

  /** Scans the lines that arrived since the last frame and renders newly stable blocks. */
  commitStableBlocks() {
    const text = this.text;
    /** @type {number} */
    let boundary = this.stableEnd;
    for (let nl = text.indexOf("\n", this.scanPos); nl !== -1; nl = text.indexOf("\n", this.scanPos)) {
      const line = text.slice(this.scanPos, nl);
      this.scanPos = nl + 1;
      if (this.fence !== null) {
        const closing = line.trim();
        if (closing.length >= this.fence.length && closing === this.fence[0].repeat(closing.length)) this.fence = null;
        continue;
      }
      if (line.trim() === "") {
        this.candidate = this.scanPos;
        continue;
      }
      if (this.candidate !== -1) {
        if (!/^[ \t]/.test(line)) boundary = this.candidate;
        this.candidate = -1;
      }
      const open = FENCE.exec(line);
      if (open) this.fence = open[1];
    }
    // The first character of the unfinished line is enough to confirm a boundary: waiting
    // for its newline would keep a whole extra paragraph in the re-rendered tail.
    if (this.candidate !== -1 && this.fence === null && this.scanPos < text.length && !/^[ \t]/.test(text[this.scanPos])) {
      boundary = this.candidate;
      this.candidate = -1;
    }
    if (boundary > this.stableEnd) {
      this.blocks.append(this.render(text.slice(this.stableEnd, boundary)));
      this.stableEnd = boundary;
    }
  }

  /** @param {string} markdown */
  render(markdown) {
    return this.options.sanitize(markdownToHtml(markdown), { loadedImages: this.loadedImages });
  }
}
