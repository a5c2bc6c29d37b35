// How the panel reaches the r3nb API: one interface, two routes.
//
// - Direct: same-origin fetch from the page, authenticated like JupyterLab itself (cookie +
//   XSRF header, plus the token when the page has one). Preferred: it answers while the kernel
//   is busy (so Stop works), the server sees the real person, and deltas skip the kernel.
// - Relay: through the widget's comm and the kernel, for embedded mode or when the server
//   extension is not reachable. Replies are matched by request id, never by order.
//
// This module chooses the route; each lives in its own (direct_transport.js,
// relay_transport.js), and what they share (reply shape, errors, `call`) in api.js, which
// is re-exported here so callers import from one place.

import { errorText, isAbort, linkedController } from "./api.js";
import { DirectTransport } from "./direct_transport.js";
import { RelayTransport } from "./relay_transport.js";

export { ApiError, NetworkError, StallError, call, isAbort } from "./api.js";

/** @typedef {import("./api.js").Transport} Transport */
/** @typedef {import("./relay_transport.js").CommModel} CommModel */

const HEALTH_TIMEOUT_MS = 10_000;

/**
 * Picks the route: direct when `api_base` is set, the mode is "server" and `GET health`
 * answers 200 JSON; the comm relay otherwise.
 * @param {{ apiBase: string, mode: string, model: CommModel, signal: AbortSignal }} options
 * @returns {Promise<{ transport: Transport, directFailure: string | null }>}
 */
export async function chooseTransport({ apiBase, mode, model, signal }) {
  if (mode === "embedded") return { transport: new RelayTransport(model), directFailure: null };
  if (!apiBase) return { transport: new RelayTransport(model), directFailure: "no direct route" };
  const direct = new DirectTransport(apiBase);
  const controller = linkedController(signal);
  const timer = setTimeout(() => controller.abort(), HEALTH_TIMEOUT_MS);
  let failure;
  try {
    const reply = await direct.request("GET", "health", undefined, controller.signal);
    if (reply.status === 200 && reply.body && typeof reply.body === "object") {
      return { transport: direct, directFailure: null };
    }
    failure = reply.body === undefined ? `HTTP ${reply.status}, not JSON` : errorText(reply);
  } catch (err) {
    if (signal.aborted) throw err;
    failure = isAbort(err) ? "timed out" : err instanceof Error ? err.message : String(err);
  } finally {
    clearTimeout(timer);
  }
  return { transport: new RelayTransport(model), directFailure: `GET ${direct.url("health")}: ${failure}` };
}

/**
 * Where the server shows an image attached to a prompt (a chip's thumbnail): on the
 * direct route, whose cookie the page's <img> carries; none through the kernel relay.
 * @param {Transport} transport
 * @param {string} cid
 * @param {string} id
 */
export function attachmentUrl(transport, cid, id) {
  const base = transport.kind === "direct" ? /** @type {{ base?: unknown }} */ (transport).base : null;
  return typeof base === "string" ? `${base}conversations/${encodeURIComponent(cid)}/attachments/${encodeURIComponent(id)}` : null;
}
