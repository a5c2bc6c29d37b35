// The direct route to the r3nb API: same-origin fetch from the page, authenticated like
// JupyterLab itself (cookie + XSRF header, plus the token when the page has one). SSE is
// read from the response body; no byte for `stallMs` ends the stream (StallError).

import { ApiError, NetworkError, STALL_MS, StallError, abortError, errorText, isAbort, linkedController } from "./api.js";
import { SseParser } from "./sse.js";

/** @typedef {import("./api.js").ApiReply} ApiReply */
/** @typedef {import("./api.js").EventHandler} EventHandler */
/** @typedef {import("./api.js").Transport} Transport */

/** @param {string | null} value */
function parseRetryAfter(value) {
  if (value == null || value === "") return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds));
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

/** The page's `_xsrf` cookie, read on every call because the server may rotate it. */
function xsrfCookie() {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === "_xsrf") return rest.join("=");
  }
  return "";
}

/** The token JupyterLab/Notebook put in the page; empty under JupyterHub. */
function pageToken() {
  const node = document.getElementById("jupyter-config-data");
  if (!node || !node.textContent) return "";
  try {
    const config = JSON.parse(node.textContent);
    return typeof config.token === "string" ? config.token : "";
  } catch {
    return "";
  }
}

/** @implements {Transport} */
export class DirectTransport {
  /**
   * @param {string} apiBase   absolute path on the page's origin, e.g. "/r3nb/api/"
   * @param {{ stallMs?: number }} [options]
   */
  constructor(apiBase, options = {}) {
    /** @type {"direct"} */
    this.kind = "direct";
    /** Observers may be pushed over a watch stream (session.js falls back to polls). */
    this.canWatch = true;
    this.base = apiBase.endsWith("/") ? apiBase : `${apiBase}/`;
    this.stallMs = options.stallMs ?? STALL_MS;
    this.token = pageToken();
  }

  /**
   * @param {string} method
   * @param {unknown} body
   * @param {AbortSignal} signal
   * @returns {RequestInit}
   */
  init(method, body, signal) {
    /** @type {Record<string, string>} */
    const headers = { "X-XSRFToken": xsrfCookie() };
    if (this.token) headers.Authorization = `token ${this.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    return {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
    };
  }

  /** @param {string} path */
  url(path) {
    return this.base + path.replace(/^\/+/, "");
  }

  /**
   * @param {string} method
   * @param {string} path
   * @param {unknown} [body]
   * @param {AbortSignal} [signal]
   * @returns {Promise<ApiReply>}
   */
  async request(method, path, body, signal) {
    let response;
    try {
      response = await fetch(this.url(path), this.init(method, body, signal ?? new AbortController().signal));
    } catch (err) {
      if (isAbort(err)) throw err;
      throw new NetworkError(err instanceof Error ? err.message : String(err));
    }
    return readReply(response);
  }

  /**
   * @param {string} method
   * @param {string} path
   * @param {unknown} body
   * @param {EventHandler} onEvent
   * @param {AbortSignal} [signal]
   */
  async stream(method, path, body, onEvent, signal) {
    const controller = linkedController(signal);
    let stalled = false;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let timer;
    const armStallTimer = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        stalled = true;
        controller.abort();
      }, this.stallMs);
    };
    armStallTimer();
    try {
      const response = await fetch(this.url(path), this.init(method, body, controller.signal));
      if (!response.ok) {
        const reply = await readReply(response);
        throw new ApiError(reply.status, errorText(reply), reply.retryAfter);
      }
      if (!response.body) throw new NetworkError("the response has no body");
      const reader = response.body.getReader();
      const parser = new SseParser(onEvent);
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        armStallTimer(); // any bytes count, heartbeats included
        parser.feed(value);
      }
      parser.close();
    } catch (err) {
      if (stalled) throw new StallError();
      if (err instanceof ApiError || err instanceof NetworkError) throw err;
      if (signal?.aborted || isAbort(err)) throw abortError();
      // An exception thrown by onEvent is a bug of ours, not of the network: keep it visible.
      if (!(err instanceof TypeError)) throw err;
      throw new NetworkError(err.message);
    } finally {
      clearTimeout(timer);
      controller.abort(); // releases the connection when we leave early
    }
  }

  close() {}
}

/**
 * @param {Response} response
 * @returns {Promise<ApiReply>}
 */
async function readReply(response) {
  const text = await response.text();
  let body;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = undefined;
  }
  return {
    status: response.status,
    body,
    retryAfter: parseRetryAfter(response.headers.get("Retry-After")),
  };
}
