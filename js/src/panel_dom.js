// The panel's elements, built once per view. Classes and data attributes are stable hooks
// for tests and for widget.css; what each control does is its own module's.

import { h } from "./dom.js";

/** @typedef {import("./branches.js").EditNote} EditNote */
/** @typedef {import("./composer.js").Composer} Composer */
/** @typedef {import("./manage.js").ConversationActions} ConversationActions */
/** @typedef {import("./models.js").ModelPicker} ModelPicker */
/** @typedef {import("./picker.js").ConversationPicker} ConversationPicker */
/** @typedef {import("./usage.js").UsageLine} UsageLine */

/**
 * The panel's elements. Classes and data attributes are stable hooks for tests.
 * @param {Document} doc
 * @param {ConversationPicker} picker
 * @param {Composer} composer
 * @param {ModelPicker} models
 * @param {ConversationActions} actions
 * @param {UsageLine} usage
 * @param {EditNote} editNote
 */
export function buildDom(doc, picker, composer, models, actions, usage, editNote) {
  const newButton = h(doc, "button", { type: "button", class: "r3nb-new", "aria-label": "New conversation" }, ["New"]);
  const modeNote = h(doc, "span", { class: "r3nb-mode", hidden: true }, ["embedded mode (single kernel)"]);
  const list = h(doc, "div", { class: "r3nb-list", role: "log", "aria-live": "polite", "aria-label": "Messages", tabindex: "0" });
  const status = h(doc, "div", { class: "r3nb-status", role: "status", "aria-live": "polite", hidden: true });
  const jumpButton = h(doc, "button", { type: "button", class: "r3nb-jump", "aria-label": "Jump to the latest message", hidden: true }, ["↓ Latest"]);
  const header = h(doc, "div", { class: "r3nb-header" }, [
    picker.select, actions.renameInput, picker.search, newButton, actions.renameButton, actions.clearButton, actions.deleteButton,
    models.select, modeNote, usage.el,
  ]);
  const body = h(doc, "div", { class: "r3nb-body" }, [list, jumpButton]);
  // No JupyterLab shortcut fires from inside the panel (see isolateTyping for typing).
  const root = h(doc, "div", { class: "r3nb-panel", "data-lm-suppress-shortcuts": "true" }, [
    header, actions.confirmBar, body, status, editNote.el, composer.el,
  ]);
  return { root, newButton, modeNote, list, jumpButton, status };
}
