// What the panel adds to the messages a session renders, without reaching into them:
// per-message actions (Copy as Markdown, Stop on a reply being written), who stopped a
// reply (with Retry), a language label on code blocks, the cell buttons of code blocks in
// replies (notebook_bridge.js), and whether author labels matter.
//
// A MutationObserver finds new messages, redrawn headers and new code blocks, so the
// message and markdown renderers stay unaware of it. Everything added here lives in
// elements of its own (`.r3nb-extras`, `.r3nb-lang`) that the renderers never replace.

import { copyText, h } from "./dom.js";
import { CellActions } from "./notebook_bridge.js";
import { loadImage } from "./sanitize.js";

/** @typedef {import("./protocol.js").MessageDict} MessageDict */

/**
 * @typedef {object} ExtrasHost
 * @property {(id: string) => MessageDict | null} message   what the session holds of it
 * @property {() => Iterable<MessageDict>} messages         every message shown
 * @property {(id: string) => Set<string>} loadedImages      the images a person chose to load
 * @property {(id: string) => void} onRetry                  ask for that reply again (a new version)
 * @property {(id: string) => void} onStop                   stop that reply
 * @property {(id: string) => import("./notebook_bridge.js").TargetCell | null} [cellFor]  a reply's attached cell
 * @property {AbortSignal} signal
 */

const MESSAGE = "[data-r3nb-role=message]";

export class MessageExtras {
  /**
   * @param {HTMLElement} list
   * @param {ExtrasHost} host
   */
  constructor(list, host) {
    this.list = list;
    this.host = host;
    /** @type {WeakMap<Element, string>} what each message's extras were drawn from */
    this.drawn = new WeakMap();
    const View = /** @type {Window & typeof globalThis} */ (list.ownerDocument.defaultView);
    this.observer = new View.MutationObserver((records) => this.onMutations(records));
    this.observer.observe(list, { childList: true, subtree: true, attributes: true, attributeFilter: ["data-status"] });
    /** @type {Set<ReturnType<typeof setTimeout>>} */
    this.timers = new Set();
    this.cells = new CellActions(list, host.signal, host.cellFor);
    list.addEventListener("click", (e) => this.onClick(e), { signal: host.signal });
    host.signal.addEventListener("abort", () => {
      this.observer.disconnect();
      for (const timer of this.timers) clearTimeout(timer);
    }, { once: true });
  }

  /** @param {MouseEvent} event  every button in the list, delegated */
  onClick(event) {
    const target = /** @type {Element | null} */ (event.target);
    const button = /** @type {HTMLButtonElement | null} */ (target?.nodeType === 1 ? target.closest("button") : null);
    if (!button || !this.list.contains(button)) return;
    const messageEl = /** @type {HTMLElement | null} */ (button.closest(MESSAGE));
    const id = messageEl?.dataset.messageId ?? "";
    const is = (/** @type {string} */ name) => button.classList.contains(name);
    if (is("r3nb-copy")) void this.copy(button, button.parentElement?.querySelector("pre")?.textContent ?? "");
    // The raw text: the markdown as the model wrote it, or the prompt as typed.
    else if (is("r3nb-copy-md")) void this.copy(button, this.host.message(id)?.content ?? "");
    else if (is("r3nb-stop-reply")) this.host.onStop(id);
    else if (is("r3nb-img-load")) loadImage(button, this.host.loadedImages(id));
    else if (is("r3nb-retry")) this.host.onRetry(id);
  }

  /**
   * @param {HTMLButtonElement} button
   * @param {string} text
   */
  async copy(button, text) {
    const label = button.dataset.label ?? button.textContent ?? "";
    button.dataset.label = label;
    const ok = await copyText(button.ownerDocument, text);
    button.textContent = ok ? "Copied" : "Copy failed";
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      button.textContent = label;
    }, 1500);
    this.timers.add(timer);
  }

  /** @param {MutationRecord[]} records */
  onMutations(records) {
    /** @type {Set<HTMLElement>} */
    const touched = new Set();
    for (const record of records) {
      const target = /** @type {Element} */ (record.target);
      if (target.nodeType !== 1 || target.closest(".r3nb-extras, .r3nb-lang, .r3nb-cell-actions")) continue;
      if (record.type === "attributes" || target.classList.contains("r3nb-meta")) {
        const article = /** @type {HTMLElement | null} */ (target.closest(MESSAGE));
        if (article) touched.add(article);
      }
      for (const node of Array.from(record.addedNodes)) {
        if (node.nodeType !== 1) continue;
        const el = /** @type {HTMLElement} */ (node);
        if (el.matches(MESSAGE)) touched.add(el);
        labelCodeBlocks(el);
        this.cells.decorate(el);
      }
    }
    for (const article of touched) {
      this.draw(article);
      this.cells.decorate(article); // a reply that ended: its blocks are checked whole
    }
    if (touched.size) this.markAuthors();
  }

  /** Redraws every message's extras (e.g. after the session replaced a message's data). */
  refresh() {
    for (const article of Array.from(this.list.querySelectorAll(MESSAGE))) this.draw(/** @type {HTMLElement} */ (article));
    this.cells.decorate(this.list);
    this.markAuthors();
  }

  /** @param {HTMLElement} article */
  draw(article) {
    const msg = this.host.message(article.dataset.messageId ?? "");
    if (!msg) return;
    const key = `${msg.status}\u0000${msg.error ?? ""}\u0000${msg.role}`;
    if (this.drawn.get(article) === key) return;
    this.drawn.set(article, key);
    const doc = article.ownerDocument;
    let extras = /** @type {HTMLElement | null} */ (article.querySelector(":scope > .r3nb-extras"));
    if (!extras) {
      extras = h(doc, "div", { class: "r3nb-extras" });
      article.append(extras);
    }
    const parts = [];
    if (msg.role === "assistant" && msg.status === "cancelled") {
      const who = msg.error ? capitalize(msg.error) : "Stopped";
      parts.push(
        h(doc, "span", { class: "r3nb-stopped", role: "note" }, [who]),
        h(doc, "button", { type: "button", class: "r3nb-retry", "aria-label": "Retry: ask for this reply again (a new version)" }, ["Retry"]),
      );
    }
    if (msg.role === "assistant" && msg.status === "streaming") {
      parts.push(h(doc, "button", { type: "button", class: "r3nb-stop-reply", "aria-label": "Stop this reply" }, ["Stop"]));
    }
    parts.push(h(doc, "button", { type: "button", class: "r3nb-copy-md", "aria-label": "Copy this message as Markdown" }, ["Copy as Markdown"]));
    extras.replaceChildren(...parts);
  }

  /** "for alice" on replies only says something when more than one person wrote here. */
  markAuthors() {
    const authors = new Set();
    for (const msg of this.host.messages()) if (msg.role === "user" && msg.author) authors.add(msg.author);
    const many = authors.size > 1 ? "many" : "one";
    if (this.list.dataset.authors !== many) this.list.dataset.authors = many;
  }
}

/**
 * Puts the fence's language ("python") on each code block in `root`.
 * @param {Element} root
 */
export function labelCodeBlocks(root) {
  const blocks = root.classList.contains("r3nb-code") ? [root] : Array.from(root.getElementsByClassName("r3nb-code"));
  for (const block of blocks) {
    if (block.querySelector(":scope > .r3nb-lang")) continue;
    const code = block.querySelector("pre > code");
    const lang = code ? /(?:^|\s)language-([\w+#.-]+)/.exec(code.className)?.[1] : undefined;
    if (!lang) continue;
    block.prepend(h(block.ownerDocument, "span", { class: "r3nb-lang" }, [lang]));
  }
}

/** @param {string} text */
function capitalize(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
