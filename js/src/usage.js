// The caller's usage line in the panel's header ("alice · today 12,345 tokens · $0.04").

import { formatUsageLine, h, usageTitle } from "./dom.js";
import { ApiError, call, isAbort } from "./transport.js";

/** @typedef {import("./transport.js").Transport} Transport */

export class UsageLine {
  /**
   * @param {Document} doc
   * @param {{ transport: () => Transport | null, signal: AbortSignal }} host
   */
  constructor(doc, host) {
    this.host = host;
    // `.r3nb-usage` like a message's usage footer; `.r3nb-panel-usage` tells them apart.
    this.el = h(doc, "span", { class: "r3nb-usage r3nb-panel-usage", hidden: true });
    /** A request runs / another was asked for meanwhile / the server has no route. */
    this.loading = false;
    this.again = false;
    this.unsupported = false;
  }

  /**
   * Reloads the line: on load, on a conversation switch and after each of this panel's
   * replies (never on a timer). A server without the route (404) or a failed request
   * hides the line.
   */
  async refresh() {
    const transport = this.host.transport();
    if (!transport || this.unsupported || this.host.signal.aborted) return;
    if (this.loading) {
      this.again = true;
      return;
    }
    this.loading = true;
    try {
      const reply = await call(transport, "GET", "usage", undefined, this.host.signal);
      const text = formatUsageLine(reply);
      this.el.textContent = text;
      this.el.title = usageTitle(reply);
      this.el.hidden = text === "";
    } catch (err) {
      if (isAbort(err)) return;
      if (err instanceof ApiError && err.status === 404) this.unsupported = true;
      this.el.hidden = true;
    } finally {
      this.loading = false;
    }
    if (this.again) {
      this.again = false;
      await this.refresh();
    }
  }
}
