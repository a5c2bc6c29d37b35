// The panel's status line: what each part reports (init, poll, send, stream, model,
// manage), shown together in one line; a part's "" clears its text.

export class StatusLine {
  /** @param {HTMLElement} el */
  constructor(el) {
    this.el = el;
    /** @type {Map<string, string>} status line texts by source, shown together */
    this.statuses = new Map();
    /** The "stream" status is a "Live stream lost" note that polling may resolve. */
    this.streamLost = false;
  }

  /**
   * @param {string} key   who reports (init, poll, send, stream, model, manage)
   * @param {string} text  "" clears
   */
  set(key, text) {
    if (text) this.statuses.set(key, text);
    else this.statuses.delete(key);
    const all = Array.from(this.statuses.values());
    this.el.textContent = all.join(" · ");
    this.el.hidden = all.length === 0;
  }

  /**
   * A session's status. A "Live stream lost" note stays only while a reply it was about
   * is still being recovered by polling (issue 13): see `settle`.
   * @param {string} key
   * @param {string} text
   */
  setSession(key, text) {
    if (key === "stream") this.streamLost = text.startsWith("Live stream lost");
    this.set(key, text);
  }

  /**
   * After a poll: the "Live stream lost" note goes once no reply is still recovering.
   * @param {() => boolean} recovering
   */
  settle(recovering) {
    if (this.streamLost && !recovering()) {
      this.streamLost = false;
      this.set("stream", "");
    }
  }
}
