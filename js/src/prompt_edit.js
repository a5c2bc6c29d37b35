// Editing a prompt: Edit puts a prompt back in the input and the next Send makes a new
// version of it (session.js `send(..., replaces)`); Cancel or Escape ends editing and puts
// back the draft it displaced.

import { EditNote } from "./branches.js";

/** @typedef {import("./protocol.js").MessageDict} MessageDict */

/**
 * What editing needs of its panel.
 * @typedef {object} PromptEditHost
 * @property {HTMLTextAreaElement} input
 * @property {AbortSignal} signal
 * @property {(id: string) => MessageDict | null} message   a message held, by id
 * @property {(id: string) => void} onEditing   the prompt being edited changed ("" for none)
 */

export class PromptEdit {
  /**
   * @param {Document} doc
   * @param {PromptEditHost} host
   */
  constructor(doc, host) {
    this.host = host;
    /** @type {string} the prompt being edited ("" for none), and the draft it displaced */
    this.editing = "";
    this.draftBeforeEdit = "";
    this.note = new EditNote(doc, { signal: host.signal, onCancel: () => this.cancel(true) });
  }

  /**
   * Puts prompt `id` back in the input; Send then makes a new version of it.
   * @param {string} id
   */
  start(id) {
    const msg = this.host.message(id);
    if (!msg || msg.role !== "user") return;
    const input = this.host.input;
    if (!this.editing) this.draftBeforeEdit = input.value;
    this.editing = id;
    input.value = msg.content;
    this.note.show(true);
    this.host.onEditing(id);
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
  }

  /** @param {boolean} [restore]  put back the draft that editing displaced (Escape, Cancel) */
  cancel(restore = false) {
    if (!this.editing) return;
    const draft = this.draftBeforeEdit;
    this.end();
    if (restore) {
      this.host.input.value = draft;
      this.host.input.focus();
    }
  }

  end() {
    this.editing = "";
    this.draftBeforeEdit = "";
    this.note.show(false);
    this.host.onEditing("");
  }
}
