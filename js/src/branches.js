// Branches in the panel: Regenerate the last reply, Edit (and resend) or Delete a turn, and
// the "‹ 2/3 ›" switcher on a message that has several versions.
//
// Each message gets a bar of its own (`.r3nb-branch`, kept in step by decorations.js: the
// list's children, and the attributes `data-status` and `data-versions`). What the buttons
// do is the panel's (see ChatPanel): this module only draws and reports clicks, so it can
// be tested on its own.

import { MESSAGE, MessageBars } from "./decorations.js";
import { h } from "./dom.js";

/** @typedef {import("./protocol.js").MessageDict} MessageDict */

/**
 * @typedef {object} BranchHost
 * @property {(id: string) => MessageDict | null} message   what the session holds of it
 * @property {(id: string) => void} onRegenerate             a new version of that reply
 * @property {(id: string) => void} onEdit                   put that prompt back in the input
 * @property {(id: string) => void} onDelete                 delete that turn (confirmed)
 * @property {(id: string) => void} onSwitch                 show the version with this id
 * @property {AbortSignal} signal
 */

/**
 * "2/3" for a message with versions, "" otherwise (also set as `data-versions`).
 * @param {MessageDict} msg
 */
export function versionLabel(msg) {
  const siblings = msg.siblings ?? [];
  const index = siblings.indexOf(msg.id);
  return siblings.length > 1 && index >= 0 ? `${index + 1}/${siblings.length}` : "";
}

export class BranchActions {
  /**
   * @param {HTMLElement} list
   * @param {BranchHost} host
   */
  constructor(list, host) {
    this.list = list;
    this.host = host;
    /** A reply is being written (or our prompt is on its way): nothing here may run. */
    this.busy = false;
    /** @type {string} the prompt being edited ("" for none) */
    this.editing = "";
    this.bars = new MessageBars(list, {
      barClass: "r3nb-branch",
      attributes: ["data-status", "data-versions"],
      key: (article) => this.key(article),
      parts: (article) => this.parts(article),
      place: (article, bar) => article.append(bar),
    }, host.signal);
    list.addEventListener("click", (e) => this.onClick(e), { signal: host.signal });
    list.addEventListener("focusout", (e) => this.onFocusOut(e), { signal: host.signal });
    list.addEventListener("keydown", (e) => {
      const target = /** @type {Element | null} */ (e.target);
      if (e.key === "Escape" && target?.classList?.contains("r3nb-confirming")) {
        e.preventDefault();
        this.unconfirm(/** @type {HTMLButtonElement} */ (target));
      }
    }, { signal: host.signal });
  }

  /** @param {boolean} busy */
  setBusy(busy) {
    if (busy === this.busy) return;
    this.busy = busy;
    this.refresh();
  }

  /** @param {string} id  the prompt being edited, "" when editing ends */
  setEditing(id) {
    if (id === this.editing) return;
    this.editing = id;
    this.refresh();
  }

  /** The id of the last reply shown: the one Regenerate applies to. */
  lastReply() {
    const articles = this.list.querySelectorAll(`:scope > ${MESSAGE}`);
    const last = /** @type {HTMLElement | undefined} */ (articles[articles.length - 1]);
    return last && last.dataset.role === "assistant" ? (last.dataset.messageId ?? "") : "";
  }

  refresh() {
    this.bars.refresh();
  }

  /**
   * What an article's bar is drawn from; null when the session does not hold it.
   * @param {HTMLElement} article
   */
  key(article) {
    const id = article.dataset.messageId ?? "";
    const msg = this.host.message(id);
    if (!msg) return null;
    const last = msg.role === "assistant" && this.lastReply() === id;
    return [msg.status, msg.role, versionLabel(msg), last, this.busy, this.editing === id].join("\u0000");
  }

  /**
   * @param {HTMLElement} article
   * @returns {Node[]}
   */
  parts(article) {
    const id = article.dataset.messageId ?? "";
    const msg = /** @type {MessageDict} */ (this.host.message(id));
    const last = msg.role === "assistant" && this.lastReply() === id;
    const doc = article.ownerDocument;
    const parts = [];
    const label = versionLabel(msg);
    if (label) {
      const siblings = msg.siblings ?? [];
      const index = siblings.indexOf(msg.id);
      const what = msg.role === "user" ? "prompt" : "reply";
      parts.push(
        h(doc, "span", { class: "r3nb-versions", role: "group", "aria-label": `Versions of this ${what}` }, [
          button(doc, "r3nb-version-prev", "‹", `Previous version of this ${what} (${index} of ${siblings.length})`, this.busy || index === 0, siblings[index - 1]),
          h(doc, "span", { class: "r3nb-version-label" }, [label]),
          button(doc, "r3nb-version-next", "›", `Next version of this ${what} (${index + 2} of ${siblings.length})`, this.busy || index === siblings.length - 1, siblings[index + 1]),
        ]),
      );
    }
    if (msg.role === "user") {
      parts.push(
        button(doc, "r3nb-edit", this.editing === id ? "Editing…" : "Edit", "Edit this prompt and send it again (a new version)", this.editing === id),
        button(doc, "r3nb-delete-turn", "Delete turn", "Delete this prompt and its reply", this.busy),
      );
    }
    if (last && msg.status !== "streaming") {
      parts.push(button(doc, "r3nb-regenerate", "Regenerate", "Regenerate this reply (a new version)", this.busy));
    }
    return parts;
  }

  /** @param {MouseEvent} event */
  onClick(event) {
    const target = /** @type {Element | null} */ (event.target);
    const el = /** @type {HTMLButtonElement | null} */ (target?.nodeType === 1 ? target.closest(".r3nb-branch button") : null);
    if (!el || el.disabled) return;
    const article = /** @type {HTMLElement | null} */ (el.closest(MESSAGE));
    const id = article?.dataset.messageId ?? "";
    const is = (/** @type {string} */ name) => el.classList.contains(name);
    if (is("r3nb-regenerate")) this.host.onRegenerate(id);
    else if (is("r3nb-edit")) this.host.onEdit(id);
    else if (is("r3nb-version-prev") || is("r3nb-version-next")) {
      if (el.dataset.target) this.host.onSwitch(el.dataset.target);
    } else if (is("r3nb-delete-turn")) {
      // Deleting cannot be undone: the first click asks, the second deletes.
      if (!el.classList.contains("r3nb-confirming")) {
        el.classList.add("r3nb-confirming");
        el.textContent = "Confirm delete";
        el.setAttribute("aria-label", "Confirm: delete this prompt and its reply for everyone (Escape cancels)");
      } else {
        this.unconfirm(el);
        this.host.onDelete(id);
      }
    }
  }

  /** @param {FocusEvent} event  leaving a "Confirm delete" button takes the question back */
  onFocusOut(event) {
    const target = /** @type {Element | null} */ (event.target);
    if (target?.classList?.contains("r3nb-confirming")) this.unconfirm(/** @type {HTMLButtonElement} */ (target));
  }

  /** @param {HTMLButtonElement} el */
  unconfirm(el) {
    el.classList.remove("r3nb-confirming");
    el.textContent = "Delete turn";
    el.setAttribute("aria-label", "Delete this prompt and its reply");
  }
}

/**
 * @param {Document} doc
 * @param {string} cls
 * @param {string} text
 * @param {string} label
 * @param {boolean} disabled
 * @param {string} [target]   the message a version button switches to
 */
function button(doc, cls, text, label, disabled, target) {
  /** @type {Record<string, string | boolean>} */
  const attrs = { type: "button", class: cls, "aria-label": label, title: label };
  if (target) attrs["data-target"] = target;
  const el = /** @type {HTMLButtonElement} */ (h(doc, "button", attrs, [text]));
  el.disabled = disabled;
  return el;
}

/**
 * The note above the input while a prompt is being edited, with its Cancel button.
 */
export class EditNote {
  /**
   * @param {Document} doc
   * @param {{ onCancel: () => void, signal: AbortSignal }} host
   */
  constructor(doc, host) {
    this.cancelButton = h(doc, "button", { type: "button", class: "r3nb-edit-cancel", "aria-label": "Cancel editing (Escape)" }, ["Cancel"]);
    this.el = h(doc, "div", { class: "r3nb-edit-note", role: "status", hidden: true }, [
      h(doc, "span", {}, ["Editing a prompt: Send makes a new version of it (the old one stays). Esc cancels."]),
      this.cancelButton,
    ]);
    this.cancelButton.addEventListener("click", () => host.onCancel(), { signal: host.signal });
  }

  /** @param {boolean} shown */
  show(shown) {
    this.el.hidden = !shown;
  }
}
