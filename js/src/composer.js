// The input row: the text box, Send and Stop, and the line saying why Send waits.
//
// One reply at a time per conversation (the server answers a second prompt with 409), so
// while a reply is being written — ours, another panel's or a kernel's — Send is disabled
// and says why, Stop (or Escape in the text box) stops that reply, and the text box stays
// editable: the next question can be drafted meanwhile. Nothing is queued: what is typed
// is sent when the person presses Enter again, never behind their back.

import { h } from "./dom.js";

/**
 * @typedef {object} ComposerHost
 * @property {AbortSignal} signal       the panel's
 * @property {() => void} onSubmit      Enter or Send
 * @property {() => void} onStop        Stop or Escape while a reply is being written
 */

/**
 * What the composer shows.
 * @typedef {object} ComposerState
 * @property {boolean} busy         a reply is being written (or our prompt is on its way)
 * @property {string} reason        why Send waits ("" when it does not)
 */

export class Composer {
  /**
   * @param {Document} doc
   * @param {ComposerHost} host
   */
  constructor(doc, host) {
    this.host = host;
    this.busy = false;
    this.input = h(doc, "textarea", {
      class: "r3nb-input",
      rows: "2",
      "aria-label": "Message",
      placeholder: "Ask anything (Enter sends, Shift+Enter for a new line, Esc stops a reply)",
    });
    this.sendButton = h(doc, "button", { type: "button", class: "r3nb-send", "aria-label": "Send message" }, ["Send"]);
    this.stopButton = h(doc, "button", { type: "button", class: "r3nb-stop", "aria-label": "Stop the reply", hidden: true }, ["Stop"]);
    this.note = h(doc, "div", { class: "r3nb-composer-note", id: uniqueId(doc), role: "status", "aria-live": "polite", hidden: true });
    // The reason Send is disabled is read out with the button and the text box.
    this.sendButton.setAttribute("aria-describedby", this.note.id);
    this.input.setAttribute("aria-describedby", this.note.id);
    /** Shown by the panel once r3nb's JupyterLab extension answers (cell_context.js). */
    this.attachCellButton = h(doc, "button", { type: "button", class: "r3nb-attach-cell", "aria-label": "Attach the active cell (its code and output) to the next message", hidden: true }, ["Attach cell"]);
    const row = h(doc, "div", { class: "r3nb-composer-row" }, [this.input, this.attachCellButton, this.sendButton, this.stopButton]);
    /** What goes with the next Send (attached cells, errors): chips a person can remove. */
    this.tray = h(doc, "div", { class: "r3nb-attachments r3nb-pending", "aria-label": "Attached to the next message", hidden: true });
    /** Takes the keys it needs (the `@name` list) before Enter sends; set by the panel. */
    this.keyFilter = /** @type {((e: KeyboardEvent) => boolean) | null} */ (null);
    /** Where the panel puts the `@name` list, above the text box. */
    this.slot = h(doc, "div", { class: "r3nb-composer-slot" });
    this.el = h(doc, "div", { class: "r3nb-composer" }, [this.note, this.tray, this.slot, row]);
    this.listen();
  }

  listen() {
    const { signal } = this.host;
    this.input.addEventListener("keydown", (e) => {
      if (e.isComposing || this.keyFilter?.(e)) return;
      if (e.key === "Enter" && !e.shiftKey) {
        e.preventDefault();
        this.host.onSubmit();
      } else if (e.key === "Escape" && this.busy) {
        e.preventDefault();
        this.host.onStop();
      }
    }, { signal });
    this.sendButton.addEventListener("click", () => this.host.onSubmit(), { signal });
    this.stopButton.addEventListener("click", () => this.host.onStop(), { signal });
  }

  /** @param {ComposerState} state */
  update({ busy, reason }) {
    const doc = this.el.ownerDocument;
    const stopHadFocus = doc.activeElement === this.stopButton;
    this.busy = busy;
    this.sendButton.disabled = busy;
    this.sendButton.title = reason;
    this.stopButton.hidden = !busy;
    this.note.textContent = reason;
    this.note.hidden = reason === "";
    this.el.dataset.busy = String(busy);
    if (stopHadFocus && !busy) this.input.focus(); // never leave the focus on a hidden button
  }
}

/**
 * Chips of what is attached to the next message, each with a remove button; an image's
 * shows it (a thumbnail of the bytes the page holds).
 * @param {HTMLElement} tray
 * @param {import("./cell_context.js").Pending[]} attachments
 * @param {(index: number) => void} onRemove
 */
export function showPending(tray, attachments, onRemove) {
  const doc = tray.ownerDocument;
  tray.replaceChildren(...attachments.map((a, i) => {
    const remove = h(doc, "button", { type: "button", class: "r3nb-chip-remove", "aria-label": `Remove ${a.name}` }, ["×"]);
    remove.addEventListener("click", () => onRemove(i), { once: true });
    const image = "data" in a ? [thumbnail(doc, `data:${a.mime};base64,${a.data}`)] : [];
    const title = "summary" in a && a.summary ? a.summary : a.kind;
    return h(doc, "span", { class: "r3nb-chip", "data-kind": a.kind, title }, [...image, chipLabel(a), remove]);
  }));
  tray.hidden = attachments.length === 0;
}

/**
 * A chip's small picture of an image.
 * @param {Document} doc
 * @param {string} src   a data: URL, or the image's route on the server
 */
export function thumbnail(doc, src) {
  return h(doc, "img", { class: "r3nb-chip-thumb", src, alt: "", loading: "lazy" });
}

/**
 * What a chip says: `@df` for a variable, the attachment's own name otherwise.
 * @param {import("./protocol.js").Attachment} a
 */
export function chipLabel(a) {
  return a.kind === "variable" ? `@${a.name}` : a.name;
}

let counter = 0;

/** @param {Document} doc */
function uniqueId(doc) {
  let id;
  do id = `r3nb-composer-note-${++counter}`;
  while (doc.getElementById(id));
  return id;
}
