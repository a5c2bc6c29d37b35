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
    const row = h(doc, "div", { class: "r3nb-composer-row" }, [this.input, this.sendButton, this.stopButton]);
    this.el = h(doc, "div", { class: "r3nb-composer" }, [this.note, row]);
    this.listen();
  }

  listen() {
    const { signal } = this.host;
    this.input.addEventListener("keydown", (e) => {
      if (e.isComposing) return;
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

let counter = 0;

/** @param {Document} doc */
function uniqueId(doc) {
  let id;
  do id = `r3nb-composer-note-${++counter}`;
  while (doc.getElementById(id));
  return id;
}
