// What the model sees, per message: Pin (always sent, even when older turns are left out to
// fit the context window) and Exclude (never sent) toggles, "not sent to the model" on an
// excluded message, and on a reply the note saying how many older messages were left out.
//
// Like branches.js: a bar of its own per message (`.r3nb-context`), kept in step by
// decorations.js (the list's children, and the attributes `data-status`, `data-context`,
// `data-left-out`). What a click does is the panel's (it PATCHes the message); this
// module draws.

import { MESSAGE, MessageBars } from "./decorations.js";
import { h } from "./dom.js";

/** @typedef {import("./protocol.js").MessageDict} MessageDict */
/** @typedef {"pinned" | "excluded"} ContextMark */

/**
 * @typedef {object} ContextMarksHost
 * @property {(id: string) => MessageDict | null} message   what the session holds of it
 * @property {(id: string) => boolean} overBudget            its prompt's pinned messages alone exceeded the window
 * @property {(id: string, mark: ContextMark | null) => void} onMark   set (or clear) the mark
 * @property {AbortSignal} signal
 */

/**
 * The person's mark on a message, and how many older messages its prompt left out.
 * (The wire fields `context` and `context_left_out`; read here in one place.)
 * @param {MessageDict} msg
 * @returns {{ mark: ContextMark | null, leftOut: number }}
 */
export function contextOf(msg) {
  const wire = /** @type {{ context?: unknown, context_left_out?: unknown }} */ (msg);
  const mark = wire.context === "pinned" || wire.context === "excluded" ? wire.context : null;
  const leftOut = typeof wire.context_left_out === "number" && wire.context_left_out > 0 ? wire.context_left_out : 0;
  return { mark, leftOut };
}

/**
 * "3 older messages were left out to fit gpt-4o's context window".
 * @param {number} count
 * @param {string | null} model
 */
export function leftOutText(count, model) {
  const what = count === 1 ? "1 older message was" : `${count} older messages were`;
  return `${what} left out to fit ${model ? `${model}'s` : "the model's"} context window`;
}

export class ContextMarks {
  /**
   * @param {HTMLElement} list
   * @param {ContextMarksHost} host
   */
  constructor(list, host) {
    this.list = list;
    this.host = host;
    this.bars = new MessageBars(list, {
      barClass: "r3nb-context",
      attributes: ["data-status", "data-context", "data-left-out"],
      key: (article) => this.key(article),
      parts: (article) => this.parts(article),
      // Above the message's own actions: the note belongs to the text it explains.
      place: (article, bar) => article.insertBefore(bar, article.querySelector(":scope > .r3nb-extras, :scope > .r3nb-branch")),
    }, host.signal);
    list.addEventListener("click", (e) => this.onClick(e), { signal: host.signal });
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
    const { mark, leftOut } = contextOf(msg);
    const over = msg.role === "assistant" && this.host.overBudget(id);
    return [msg.status, msg.role, mark, leftOut, over].join("\u0000");
  }

  /**
   * @param {HTMLElement} article
   * @returns {Node[]}
   */
  parts(article) {
    const id = article.dataset.messageId ?? "";
    const msg = /** @type {MessageDict} */ (this.host.message(id));
    const { mark, leftOut } = contextOf(msg);
    const over = msg.role === "assistant" && this.host.overBudget(id);
    const doc = article.ownerDocument;
    const parts = [];
    if (msg.role === "assistant" && leftOut > 0) {
      parts.push(h(doc, "span", { class: "r3nb-left-out", role: "note" }, [leftOutText(leftOut, msg.model)]));
    }
    if (over) {
      parts.push(h(doc, "span", { class: "r3nb-over-budget", role: "note" }, [
        "The pinned messages alone exceed this model's context window: all were sent anyway (unpin some if replies fail)",
      ]));
    }
    if (mark === "excluded") parts.push(h(doc, "span", { class: "r3nb-excluded-note" }, ["not sent to the model"]));
    if (msg.status !== "streaming" && (msg.role === "user" || msg.role === "assistant")) {
      parts.push(
        toggle(doc, "r3nb-pin", mark === "pinned" ? "Pinned" : "Pin", "Pin: always send this message to the model", mark === "pinned"),
        toggle(doc, "r3nb-exclude", mark === "excluded" ? "Excluded" : "Exclude", "Exclude: never send this message to the model", mark === "excluded"),
      );
    }
    return parts;
  }

  /** @param {MouseEvent} event */
  onClick(event) {
    const target = /** @type {Element | null} */ (event.target);
    const el = /** @type {HTMLButtonElement | null} */ (target?.nodeType === 1 ? target.closest(".r3nb-context button") : null);
    if (!el || el.disabled) return;
    const id = /** @type {HTMLElement | null} */ (el.closest(MESSAGE))?.dataset.messageId ?? "";
    const pressed = el.getAttribute("aria-pressed") === "true";
    /** @type {ContextMark} */
    const mark = el.classList.contains("r3nb-pin") ? "pinned" : "excluded";
    this.host.onMark(id, pressed ? null : mark);
  }
}

/**
 * A toggle button (aria-pressed): Space and Enter work as on any button.
 * @param {Document} doc
 * @param {string} cls
 * @param {string} text
 * @param {string} label
 * @param {boolean} pressed
 */
function toggle(doc, cls, text, label, pressed) {
  return h(doc, "button", { type: "button", class: cls, "aria-pressed": String(pressed), "aria-label": label, title: label }, [text]);
}
