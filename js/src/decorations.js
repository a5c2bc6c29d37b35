// A bar of its own on each message, which the renderers never replace, kept in step with
// the list (branches.js: versions, Edit, Regenerate; context_marks.js: Pin, Exclude).
//
// Two MutationObservers do it without touching the renderers: one on the list's children
// (a message added or removed, which may change which reply is the last), one on the
// attributes the message view sets that a bar depends on. Neither fires per streamed
// delta, and a bar is redrawn only when what it is drawn from (its key) changed.

export const MESSAGE = "[data-r3nb-role=message]";

/**
 * @typedef {object} Decoration
 * @property {string} barClass                    the bar's class (`r3nb-branch`)
 * @property {string[]} attributes                the message attributes the bar depends on
 * @property {(article: HTMLElement) => string | null} key  what the bar is drawn from (null: no message)
 * @property {(article: HTMLElement, bar: HTMLElement) => Node[]} parts  the bar's content
 * @property {(article: HTMLElement, bar: HTMLElement) => void} place    puts a new bar in the article
 */

export class MessageBars {
  /**
   * @param {HTMLElement} list
   * @param {Decoration} decoration
   * @param {AbortSignal} signal  disconnects the observers
   */
  constructor(list, decoration, signal) {
    this.list = list;
    this.decoration = decoration;
    /** @type {WeakMap<Element, string>} what each bar was drawn from */
    this.drawn = new WeakMap();
    const View = /** @type {Window & typeof globalThis} */ (list.ownerDocument.defaultView);
    const children = new View.MutationObserver(() => this.refresh());
    children.observe(list, { childList: true });
    const attributes = new View.MutationObserver((records) => {
      for (const record of records) {
        const el = /** @type {HTMLElement} */ (record.target);
        if (el.parentElement === list) this.draw(el);
      }
    });
    attributes.observe(list, { subtree: true, attributes: true, attributeFilter: decoration.attributes });
    signal.addEventListener("abort", () => {
      children.disconnect();
      attributes.disconnect();
    }, { once: true });
  }

  /** @returns {HTMLElement[]} the messages, in order */
  articles() {
    return /** @type {HTMLElement[]} */ (Array.from(this.list.querySelectorAll(`:scope > ${MESSAGE}`)));
  }

  refresh() {
    for (const article of this.articles()) this.draw(article);
  }

  /** @param {HTMLElement} article */
  draw(article) {
    const key = this.decoration.key(article);
    if (key === null || this.drawn.get(article) === key) return;
    this.drawn.set(article, key);
    const cls = this.decoration.barClass;
    let bar = /** @type {HTMLElement | null} */ (article.querySelector(`:scope > .${cls}`));
    if (!bar) {
      bar = /** @type {HTMLElement} */ (article.ownerDocument.createElement("div"));
      bar.className = cls;
      this.decoration.place(article, bar);
    }
    const parts = this.decoration.parts(article, bar);
    bar.replaceChildren(...parts);
    bar.hidden = parts.length === 0;
  }
}
