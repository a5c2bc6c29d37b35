// Rename, clear and delete the open conversation, from the header, by keyboard as well as
// mouse. Clear deletes nothing (the next prompt starts afresh; the earlier turns stay one
// version switch away), so it asks no question.
//
// Rename swaps the picker for a text box (Enter saves, Escape cancels); Delete asks in the
// panel itself — never `window.confirm`, which blocks the page and which notebooks' hosts
// may suppress — with Cancel focused, so a stray Enter deletes nothing.

import { h } from "./dom.js";
import { call, isAbort } from "./transport.js";

/** @typedef {import("./protocol.js").ConversationDict} ConversationDict */
/** @typedef {import("./transport.js").Transport} Transport */

/**
 * @typedef {object} ManageHost
 * @property {() => Transport | null} transport
 * @property {AbortSignal} signal
 * @property {() => string} current                 the open conversation ("" for none)
 * @property {() => ConversationDict | null} info   what is known of it
 * @property {(conversation: ConversationDict) => void} onRenamed
 * @property {(cid: string) => void} onDeleted
 * @property {(conversation: ConversationDict) => void} onCleared   its branch is now empty
 * @property {(text: string) => void} setStatus      "" clears
 * @property {HTMLElement} picker                     hidden while renaming; focus returns to it
 */

export class ConversationActions {
  /**
   * @param {Document} doc
   * @param {ManageHost} host
   */
  constructor(doc, host) {
    this.host = host;
    this.renameButton = h(doc, "button", { type: "button", class: "r3nb-rename", "aria-label": "Rename this conversation", title: "Rename" }, ["Rename"]);
    this.clearButton = h(doc, "button", { type: "button", class: "r3nb-clear", "aria-label": "Clear: start afresh in this conversation (earlier turns stay as another version)", title: "Clear" }, ["Clear"]);
    this.deleteButton = h(doc, "button", { type: "button", class: "r3nb-delete", "aria-label": "Delete this conversation", title: "Delete" }, ["Delete"]);
    this.renameInput = h(doc, "input", { type: "text", class: "r3nb-rename-input", "aria-label": "New title (Enter saves, Escape cancels)", maxlength: "200", hidden: true });
    this.confirmText = h(doc, "span", { class: "r3nb-confirm-text" });
    this.confirmDelete = h(doc, "button", { type: "button", class: "r3nb-confirm-delete" }, ["Delete"]);
    this.confirmCancel = h(doc, "button", { type: "button", class: "r3nb-confirm-cancel" }, ["Cancel"]);
    this.confirmBar = h(doc, "div", { class: "r3nb-confirm", role: "alertdialog", "aria-label": "Delete the conversation?", hidden: true }, [
      this.confirmText, this.confirmDelete, this.confirmCancel,
    ]);
    this.busy = false;
    this.listen();
    this.update();
  }

  listen() {
    const { signal } = this.host;
    this.renameButton.addEventListener("click", () => this.startRename(), { signal });
    this.renameInput.addEventListener("keydown", (e) => {
      if (e.isComposing) return;
      if (e.key === "Enter") {
        e.preventDefault();
        void this.saveRename();
      } else if (e.key === "Escape") {
        e.preventDefault();
        this.endRename();
      }
    }, { signal });
    this.renameInput.addEventListener("blur", () => { if (!this.busy) this.endRename(false); }, { signal });
    this.deleteButton.addEventListener("click", () => this.askDelete(), { signal });
    this.clearButton.addEventListener("click", () => void this.clearCurrent(), { signal });
    this.confirmCancel.addEventListener("click", () => this.closeConfirm(), { signal });
    this.confirmDelete.addEventListener("click", () => void this.deleteCurrent(), { signal });
    this.confirmBar.addEventListener("keydown", (e) => {
      if (e.key === "Escape") {
        e.preventDefault();
        this.closeConfirm();
      }
    }, { signal });
  }

  /** The open conversation changed: the controls apply to it, or to nothing. */
  update() {
    const none = this.host.current() === "";
    this.renameButton.disabled = none || this.busy;
    this.deleteButton.disabled = none || this.busy;
    this.clearButton.disabled = none || this.busy;
    if (none) {
      this.endRename(false);
      this.closeConfirm(false);
    }
  }

  startRename() {
    if (!this.host.current()) return;
    this.closeConfirm(false);
    this.renameInput.value = this.host.info()?.title ?? "";
    this.host.picker.hidden = true;
    this.renameInput.hidden = false;
    this.renameInput.focus();
    this.renameInput.select();
  }

  /** @param {boolean} [refocus] */
  endRename(refocus = true) {
    if (this.renameInput.hidden) return;
    this.renameInput.hidden = true;
    this.host.picker.hidden = false;
    if (refocus) this.host.picker.focus();
  }

  async saveRename() {
    const cid = this.host.current();
    const title = this.renameInput.value.trim();
    const transport = this.host.transport();
    if (!cid || !transport || this.busy) return;
    if (!title || title === this.host.info()?.title) return this.endRename();
    this.busy = true;
    try {
      const reply = await call(transport, "PATCH", `conversations/${encodeURIComponent(cid)}`, { title }, this.host.signal);
      this.host.onRenamed(/** @type {ConversationDict} */ (reply.conversation));
      this.host.setStatus("");
      this.busy = false;
      this.endRename();
    } catch (err) {
      this.busy = false;
      if (isAbort(err)) return;
      this.host.setStatus(`Rename failed: ${err instanceof Error ? err.message : String(err)}`);
      this.renameInput.focus(); // the typed title stays, to fix or to cancel with Escape
    } finally {
      this.update();
    }
  }

  askDelete() {
    if (!this.host.current()) return;
    this.endRename(false);
    const info = this.host.info();
    const title = info?.title || "Untitled";
    const count = info ? ` and its ${info.message_count} message${info.message_count === 1 ? "" : "s"}` : "";
    this.confirmText.textContent = `Delete “${title}”${count} for everyone? This cannot be undone.`;
    this.confirmBar.hidden = false;
    this.confirmCancel.focus();
  }

  /** @param {boolean} [refocus] */
  closeConfirm(refocus = true) {
    if (this.confirmBar.hidden) return;
    this.confirmBar.hidden = true;
    if (refocus) this.deleteButton.focus();
  }

  async clearCurrent() {
    const cid = this.host.current();
    const transport = this.host.transport();
    if (!cid || !transport || this.busy) return;
    this.busy = true;
    this.update();
    try {
      const reply = await call(transport, "POST", `conversations/${encodeURIComponent(cid)}/clear`, {}, this.host.signal);
      this.host.setStatus("");
      this.host.onCleared(/** @type {ConversationDict} */ (reply.conversation));
    } catch (err) {
      if (isAbort(err)) return;
      this.host.setStatus(`Clear failed: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      this.busy = false;
      this.update();
    }
  }

  async deleteCurrent() {
    const cid = this.host.current();
    const transport = this.host.transport();
    if (!cid || !transport || this.busy) return;
    this.busy = true;
    this.update();
    try {
      await call(transport, "DELETE", `conversations/${encodeURIComponent(cid)}`, undefined, this.host.signal);
      this.closeConfirm(false);
      this.host.setStatus("");
      this.host.onDeleted(cid);
      this.host.picker.focus();
    } catch (err) {
      if (isAbort(err)) return;
      this.host.setStatus(`Delete failed: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      this.busy = false;
      this.update();
    }
  }
}
