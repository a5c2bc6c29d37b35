// The conversation picker: a native <select> (keyboard and screen-reader friendly as is)
// fed page by page from `GET conversations?limit&cursor&q`, and a search box beside it.
//
// The list is a prefix of the server's order (newest activity first) for the current
// search; a "Load more…" option at its end fetches the next page. The open conversation is
// always an option, pinned at the top when it is not on a loaded page, so it stays shown
// and selectable.

import { h } from "./dom.js";
import { call, isAbort } from "./transport.js";

/** @typedef {import("./protocol.js").ConversationDict} ConversationDict */
/** @typedef {import("./protocol.js").ConversationPage} ConversationPage */
/** @typedef {import("./transport.js").Transport} Transport */

/** Conversations per page; the server's default too. */
export const PAGE_SIZE = 100;
/** The search waits this long after the last keystroke. */
export const SEARCH_DEBOUNCE_MS = 250;
/** The value of the "Load more…" option: never a conversation id (ids are hex/uuid-like). */
export const MORE = "\u0000more";

/**
 * The `GET conversations` path for one page.
 * @param {{ limit?: number, cursor?: string | null, q?: string }} page
 */
export function listPath({ limit = PAGE_SIZE, cursor = null, q = "" }) {
  const params = new URLSearchParams({ limit: String(limit) });
  if (cursor) params.set("cursor", cursor);
  if (q) params.set("q", q);
  return `conversations?${params}`;
}

/**
 * @typedef {object} PickerHost
 * @property {() => Transport | null} transport
 * @property {AbortSignal} signal            the panel's: aborted when it is disposed
 * @property {(cid: string) => void} onPick   a person chose conversation `cid`
 */

export class ConversationPicker {
  /**
   * @param {Document} doc
   * @param {PickerHost} host
   */
  constructor(doc, host) {
    this.doc = doc;
    this.host = host;
    /** @type {ConversationDict[]} loaded pages of the current search, in server order */
    this.items = [];
    /** @type {string | null} */
    this.nextCursor = null;
    this.query = "";
    /** The search the loaded pages belong to. */
    this.shownQuery = "";
    /** The open conversation ("" for none), and what is known of it. */
    this.current = "";
    /** @type {ConversationDict | null} */
    this.currentInfo = null;
    /** No conversation is open because New was chosen: it is saved by its first message. */
    this.draft = false;
    /** Bumped by every new listing: replies to older ones are dropped. */
    this.generation = 0;
    this.loadingMore = false;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.searchTimer = undefined;
    this.select = h(doc, "select", { class: "r3nb-conversations", "aria-label": "Conversation" });
    this.search = h(doc, "input", {
      type: "search",
      class: "r3nb-search",
      "aria-label": "Search conversations",
      placeholder: "Search…",
      autocomplete: "off",
      spellcheck: "false",
    });
    this.listen();
  }

  listen() {
    const signal = this.host.signal;
    this.select.addEventListener("change", () => this.onChange(), { signal });
    this.search.addEventListener("input", () => this.scheduleSearch(), { signal });
    this.search.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        this.runSearch();
      } else if (e.key === "Escape" && this.search.value) {
        e.preventDefault();
        this.search.value = "";
        this.runSearch();
      }
    }, { signal });
    signal.addEventListener("abort", () => clearTimeout(this.searchTimer), { once: true });
  }

  onChange() {
    const value = this.select.value;
    if (value === MORE) {
      this.select.value = this.current; // the choice is an action, not a conversation
      void this.loadMore();
      return;
    }
    if (value !== this.current) this.host.onPick(value);
  }

  scheduleSearch() {
    clearTimeout(this.searchTimer);
    this.searchTimer = setTimeout(() => this.runSearch(), SEARCH_DEBOUNCE_MS);
  }

  runSearch() {
    clearTimeout(this.searchTimer);
    const q = this.search.value.trim();
    if (q === this.query) return;
    this.query = q;
    void this.reload().catch(() => {}); // best effort: the old list stays
  }

  /** The newest conversation of the loaded list ("" when none). */
  first() {
    return this.items[0]?.id ?? "";
  }

  /**
   * Loads the first page of the current search. When more pages were loaded before, the
   * fresh first page is merged into them (so a refresh never drops what was paged in).
   * Rejects when the request fails (start-up decides what to do).
   */
  async reload() {
    const transport = this.host.transport();
    if (!transport) return;
    const generation = ++this.generation;
    const query = this.query;
    this.select.setAttribute("aria-busy", "true");
    try {
      const page = /** @type {ConversationPage} */ (await call(transport, "GET", listPath({ q: query }), undefined, this.host.signal));
      if (generation !== this.generation) return;
      const fresh = page.conversations || [];
      // Pages loaded after the first stay unless the fresh page is the whole list (no
      // next cursor: then it says exactly what exists). Whether the loaded pages had a
      // next cursor does not matter: after the last one they have none.
      const keepLoaded = this.items.length > fresh.length && page.next_cursor != null && query === this.shownQuery;
      if (keepLoaded) {
        const ids = new Set(fresh.map((c) => c.id));
        this.items = [...fresh, ...this.items.filter((c) => !ids.has(c.id))];
        this.items.sort(newestFirst);
      } else {
        this.items = fresh;
        this.nextCursor = page.next_cursor ?? null;
      }
      this.shownQuery = query;
      this.render();
    } finally {
      if (generation === this.generation) this.select.removeAttribute("aria-busy");
    }
  }

  /** Appends the next page (the "Load more…" option). */
  async loadMore() {
    const transport = this.host.transport();
    if (!transport || !this.nextCursor || this.loadingMore) return;
    this.loadingMore = true;
    const generation = this.generation;
    this.select.setAttribute("aria-busy", "true");
    try {
      const path = listPath({ cursor: this.nextCursor, q: this.query });
      const page = /** @type {ConversationPage} */ (await call(transport, "GET", path, undefined, this.host.signal));
      if (generation !== this.generation) return; // a new search replaced the list meanwhile
      const ids = new Set(this.items.map((c) => c.id));
      this.items = [...this.items, ...(page.conversations || []).filter((c) => !ids.has(c.id))];
      this.nextCursor = page.next_cursor ?? null;
      this.render();
    } catch (err) {
      if (!isAbort(err)) this.select.title = `Could not load more conversations: ${err instanceof Error ? err.message : String(err)}`;
    } finally {
      this.loadingMore = false;
      if (generation === this.generation) this.select.removeAttribute("aria-busy");
    }
  }

  /**
   * The open conversation changed ("" for none).
   * @param {string} cid
   */
  setCurrent(cid) {
    if (cid) this.draft = false;
    if (cid !== this.current) this.currentInfo = this.items.find((c) => c.id === cid) ?? null;
    this.current = cid;
    this.render();
  }

  /** @param {ConversationDict} conversation  fresh from a snapshot or a create */
  note(conversation) {
    if (conversation.id === this.current) this.currentInfo = conversation;
    const index = this.items.findIndex((c) => c.id === conversation.id);
    if (index >= 0) {
      const known = this.items[index];
      if (
        known.title === conversation.title && known.message_count === conversation.message_count &&
        known.updated_at === conversation.updated_at && known.model === conversation.model
      ) return;
      this.items[index] = conversation;
      this.items.sort(newestFirst);
    } else if (!this.query && (this.items.length === 0 || conversation.updated_at >= this.items[0].updated_at)) {
      // Newer than the whole first page: it belongs at the head of the listing.
      this.items.unshift(conversation);
    }
    this.render();
  }

  /** @param {string} cid  deleted */
  remove(cid) {
    this.items = this.items.filter((c) => c.id !== cid);
    if (this.currentInfo?.id === cid) this.currentInfo = null;
    this.render();
  }

  render() {
    const doc = this.doc;
    const options = this.items.map((c) => option(doc, c));
    if (this.current && !this.items.some((c) => c.id === this.current)) {
      const info = this.currentInfo ?? { id: this.current, title: "", message_count: 0, updated_at: 0 };
      options.unshift(option(doc, /** @type {ConversationDict} */ (info)));
    }
    if (!this.current) {
      const label = this.draft ? "New conversation" : "No conversation yet";
      options.unshift(h(doc, "option", { value: "", disabled: true, class: this.draft ? "r3nb-draft" : "" }, [label]));
    }
    if (this.nextCursor) options.push(h(doc, "option", { value: MORE, class: "r3nb-more" }, ["Load more…"]));
    if (this.query && this.items.length === 0) {
      options.push(h(doc, "option", { value: "", disabled: true, class: "r3nb-no-match" }, [`No conversation matches “${this.query}”`]));
    }
    this.select.replaceChildren(...options);
    this.select.value = this.current;
  }
}

/**
 * @param {Document} doc
 * @param {ConversationDict} c
 */
function option(doc, c) {
  const when = c.updated_at ? ` · ${new Date(c.updated_at * 1000).toLocaleString()}` : "";
  return h(doc, "option", { value: c.id, title: `${c.message_count} messages${when}` }, [c.title || "Untitled"]);
}

/**
 * @param {ConversationDict} a
 * @param {ConversationDict} b
 */
function newestFirst(a, b) {
  return b.updated_at - a.updated_at || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}
