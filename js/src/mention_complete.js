// Completion of `@name` while typing in the panel's input: the kernel's variables whose
// names start with what follows the `@` (asked over the comm, bounded: a busy kernel shows
// a note instead of names). ArrowUp/ArrowDown choose, Tab or Enter take the chosen name,
// Escape closes the list; a click takes one too. Names are shown as text, never as HTML.

import { h } from "./dom.js";
import { typedMention } from "./kernel_context.js";

/** How long typing must pause before the kernel is asked. */
const DEBOUNCE_MS = 120;

export class MentionCompleter {
  /**
   * @param {Document} doc
   * @param {HTMLTextAreaElement} input
   * @param {import("./kernel_context.js").KernelContext} context
   * @param {AbortSignal} signal
   */
  constructor(doc, input, context, signal) {
    this.input = input;
    this.context = context;
    this.signal = signal;
    this.list = h(doc, "ul", { class: "r3nb-mentions", role: "listbox", id: uniqueId(doc), "aria-label": "Kernel variables", hidden: true });
    /** @type {string[]} */
    this.names = [];
    this.selected = 0;
    this.asked = 0;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.timer = undefined;
    input.setAttribute("aria-autocomplete", "list");
    input.setAttribute("aria-controls", this.list.id);
    input.addEventListener("input", () => this.schedule(), { signal });
    input.addEventListener("blur", () => this.close(), { signal });
    // mousedown, not click: the input keeps the focus (a blur would close the list first).
    this.list.addEventListener("mousedown", (e) => {
      const option = /** @type {Element | null} */ (e.target)?.closest?.("[role=option]");
      if (!option || option.getAttribute("aria-disabled") === "true") return;
      e.preventDefault();
      this.take(Number(option.getAttribute("data-index")));
    }, { signal });
    signal.addEventListener("abort", () => clearTimeout(this.timer), { once: true });
  }

  get open() {
    return !this.list.hidden;
  }

  /**
   * The composer's keydown, first: true when the key was the list's.
   * @param {KeyboardEvent} e
   */
  onKeyDown(e) {
    if (!this.open || e.isComposing) return false;
    const n = this.names.length;
    if (e.key === "Escape") this.close();
    else if (e.key === "ArrowDown" && n) this.choose((this.selected + 1) % n);
    else if (e.key === "ArrowUp" && n) this.choose((this.selected + n - 1) % n);
    else if ((e.key === "Tab" || (e.key === "Enter" && !e.shiftKey)) && n) this.take(this.selected);
    else return false;
    e.preventDefault();
    e.stopImmediatePropagation();
    return true;
  }

  schedule() {
    clearTimeout(this.timer);
    const typed = typedMention(this.input.value, this.input.selectionStart ?? this.input.value.length);
    if (!typed) return this.close();
    this.timer = setTimeout(() => void this.ask(typed.prefix), DEBOUNCE_MS);
  }

  /** @param {string} prefix */
  async ask(prefix) {
    const asked = ++this.asked;
    const answer = await this.context.complete(prefix);
    if (this.signal.aborted || asked !== this.asked) return; // typing moved on
    const typed = typedMention(this.input.value, this.input.selectionStart ?? this.input.value.length);
    if (!typed || typed.prefix !== prefix) return;
    if (!answer.ok) return this.show([], answer.busy ? "The kernel is busy: no names to complete until its cell ends." : answer.error);
    const names = answer.reply.names ?? [];
    this.show(names.map((n) => n.name), names.length ? "" : `No variable starting with “${prefix}” in the kernel.`, names.map((n) => n.type));
  }

  /**
   * @param {string[]} names
   * @param {string} note    shown (not choosable) when there are no names
   * @param {string[]} [types]
   */
  show(names, note, types = []) {
    const doc = this.list.ownerDocument;
    this.names = names;
    this.selected = 0;
    const items = names.map((name, i) =>
      h(doc, "li", { role: "option", class: "r3nb-mention", id: `${this.list.id}-${i}`, "data-index": String(i), "data-name": name }, [
        h(doc, "span", { class: "r3nb-mention-name" }, [`@${name}`]),
        h(doc, "span", { class: "r3nb-mention-type" }, [types[i] ?? ""]),
      ]));
    if (!names.length) items.push(h(doc, "li", { role: "option", class: "r3nb-mention-note", "aria-disabled": "true" }, [note]));
    this.list.replaceChildren(...items);
    this.list.hidden = false;
    this.input.setAttribute("aria-expanded", "true");
    this.choose(0);
  }

  /** @param {number} index */
  choose(index) {
    this.selected = index;
    this.list.querySelectorAll(".r3nb-mention").forEach((el, i) => el.setAttribute("aria-selected", String(i === index)));
    if (this.names.length) this.input.setAttribute("aria-activedescendant", `${this.list.id}-${index}`);
    else this.input.removeAttribute("aria-activedescendant");
  }

  /** @param {number} index  puts `@name ` in place of the `@prefix` being typed */
  take(index) {
    const name = this.names[index];
    const caret = this.input.selectionStart ?? this.input.value.length;
    const typed = typedMention(this.input.value, caret);
    this.close();
    if (!name || !typed) return;
    const value = this.input.value;
    const insert = `@${name} `;
    this.input.value = value.slice(0, typed.start) + insert + value.slice(caret);
    const at = typed.start + insert.length;
    this.input.setSelectionRange(at, at);
  }

  close() {
    clearTimeout(this.timer);
    this.asked++;
    this.names = [];
    this.list.hidden = true;
    this.list.replaceChildren();
    this.input.setAttribute("aria-expanded", "false");
    this.input.removeAttribute("aria-activedescendant");
  }
}

let counter = 0;

/** @param {Document} doc */
function uniqueId(doc) {
  let id;
  do id = `r3nb-mentions-${++counter}`;
  while (doc.getElementById(id));
  return id;
}
