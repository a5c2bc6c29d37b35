// The panel's route to the r3nb API and the cadence it polls at. The route is chosen once
// per view (transport.js) and retried with back-off, with start-up's first loads, until
// both answer; the snapshot cadence is the widget's trait, else the server's (GET health).

import { ApiError, call, chooseTransport, isAbort } from "./transport.js";

/** @typedef {import("./transport.js").Transport} Transport */

const MAX_INIT_BACKOFF_MS = 60_000;

/**
 * What a connection needs of its panel.
 * @typedef {object} ConnectionHost
 * @property {import("./panel.js").WidgetModel} model
 * @property {HTMLElement} el                    its `data-transport` names the route chosen
 * @property {AbortSignal} signal
 * @property {(ms: number) => Promise<boolean>} sleep   false when the panel was disposed
 * @property {(text: string) => void} setStatus   the start-up status ("" clears)
 */

export class Connection {
  /** @param {ConnectionHost} host */
  constructor(host) {
    this.host = host;
    /** @type {Transport | null} */
    this.transport = null;
    this.directFailure = /** @type {string | null} */ (null);
    /** the server's snapshot cadence (GET health), used when the trait sets none */
    this.serverSnapshotSeconds = 2;
  }

  /**
   * Chooses the route, then runs `load` over it; retries both with back-off.
   * @param {() => Promise<unknown>} load   start-up's first requests
   * @returns {Promise<boolean>} false when the panel was disposed meanwhile
   */
  async connect(load) {
    const { model, el, signal } = this.host;
    for (let attempt = 0; !signal.aborted; attempt++) {
      try {
        if (!this.transport) {
          const chosen = await chooseTransport({
            apiBase: model.get("api_base") || "",
            mode: model.get("mode") || "server",
            model,
            signal,
          });
          this.transport = chosen.transport;
          this.directFailure = chosen.directFailure;
          el.dataset.transport = chosen.transport.kind;
        }
        await load();
        break;
      } catch (err) {
        if (signal.aborted || isAbort(err)) return false;
        const delay = Math.min(MAX_INIT_BACKOFF_MS, 2000 * 2 ** attempt);
        this.host.setStatus(`${this.describeFailure(err)}; retrying in ${Math.round(delay / 1000)} s`);
        if (!(await this.host.sleep(delay))) return false;
      }
    }
    this.host.setStatus("");
    return true;
  }

  /**
   * The server's snapshot cadence, unless the widget's `snapshot_interval` trait sets one:
   * read here, not by the kernel when it builds the panel (a `ChatPanel()` makes no HTTP
   * call and shows even while the server is unreachable).
   */
  async loadCadence() {
    if (seconds(this.host.model.get("snapshot_interval"), 0) || !this.transport) return;
    const health = await call(this.transport, "GET", "health", undefined, this.host.signal);
    const value = /** @type {{ snapshot_interval?: unknown }} */ (health).snapshot_interval;
    this.serverSnapshotSeconds = seconds(value, 2);
  }

  /** How often a session polls: while a reply others write streams, and otherwise (ms). */
  intervals() {
    const model = this.host.model;
    return {
      snapshotMs: seconds(model.get("snapshot_interval"), this.serverSnapshotSeconds) * 1000,
      idleMs: seconds(model.get("idle_interval"), 10) * 1000,
    };
  }

  /** @param {unknown} err */
  describeFailure(err) {
    const why = err instanceof Error ? err.message : String(err);
    if (err instanceof ApiError) return why;
    if (this.transport?.kind === "relay" && this.directFailure && this.directFailure !== "no direct route") {
      return `Cannot reach the r3nb server extension: ${this.directFailure}; the kernel relay failed too (${why})`;
    }
    if (this.transport?.kind === "relay") return `Cannot reach r3nb through the kernel (${why})`;
    return `Cannot reach the r3nb server extension: ${why}`;
  }
}

/**
 * A positive number of seconds from a trait, or the default.
 * @param {unknown} value
 * @param {number} fallback
 */
function seconds(value, fallback) {
  return typeof value === "number" && Number.isFinite(value) && value > 0 ? Math.max(value, 0.2) : fallback;
}
