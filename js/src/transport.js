// How the panel reaches the r3nb API: one interface, two routes.
//
// - Direct: same-origin fetch from the page, authenticated like JupyterLab itself (cookie +
//   XSRF header, plus the token when the page has one). Preferred: it answers while the kernel
//   is busy (so Stop works), the server sees the real person, and deltas skip the kernel.
// - Relay: through the widget's comm and the kernel, for embedded mode or when the server
//   extension is not reachable. Replies are matched by request id, never by order.

import { STALL_SECONDS } from "./protocol.js";
import { SseParser } from "./sse.js";

/**
 * @typedef {object} ApiReply
 * @property {number} status
 * @property {any} body                  parsed JSON; undefined when the body was not JSON
 * @property {number | null} retryAfter  seconds, from Retry-After (or a relayed body field)
 */

/**
 * @callback EventHandler
 * @param {string} event
 * @param {any} data
 * @returns {void}
 */

/**
 * @typedef {object} Transport
 * @property {"direct" | "relay"} kind
 * @property {(method: string, path: string, body?: unknown, signal?: AbortSignal) => Promise<ApiReply>} request
 * @property {(method: string, path: string, body: unknown, onEvent: EventHandler, signal?: AbortSignal) => Promise<void>} stream
 *   Resolves when the stream ends; rejects with ApiError (refused before it started),
 *   StallError (silent too long), NetworkError, or the signal's AbortError.
 * @property {() => void} close
 * @property {boolean} [canWatch]  offers `GET conversations/{cid}/watch` (HTTP only: the
 *   comm relay has no such stream; a server without the route answers 404, see session.js)
 */

/**
 * The subset of the anywidget model this module uses.
 * @typedef {object} CommModel
 * @property {(content: any) => void} send
 * @property {(name: string, cb: (...args: any[]) => void) => void} on
 * @property {(name?: string | null, cb?: ((...args: any[]) => void) | null) => void} off
 */

/** No byte (not even a heartbeat) for this long means the stream is dead. */
export const STALL_MS = STALL_SECONDS * 1000;
/** A relayed plain request the kernel never answers (kernel restarted) must not hang a poll. */
const RELAY_REQUEST_TIMEOUT_MS = 60_000;
const HEALTH_TIMEOUT_MS = 10_000;

/** The server refused the request (4xx/5xx with `{"error": ...}`). */
export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} message
   * @param {number | null} [retryAfter]
   */
  constructor(status, message, retryAfter = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/** The server could not be reached at all. */
export class NetworkError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "NetworkError";
  }
}

/** A stream went silent for longer than the stall timeout. */
export class StallError extends Error {
  constructor() {
    super("the stream went silent");
    this.name = "StallError";
  }
}

/** @param {unknown} err */
export function isAbort(err) {
  return err instanceof Error && err.name === "AbortError";
}

function abortError() {
  return new DOMException("aborted", "AbortError");
}

/**
 * The message a person should see for a refused reply.
 * @param {ApiReply} reply
 */
export function errorText(reply) {
  const body = reply.body;
  if (body && typeof body === "object" && typeof body.error === "string") return body.error;
  return `HTTP ${reply.status}`;
}

/**
 * A request whose non-2xx reply becomes an ApiError.
 * @param {Transport} transport
 * @param {string} method
 * @param {string} path
 * @param {unknown} [body]
 * @param {AbortSignal} [signal]
 * @returns {Promise<any>}
 */
export async function call(transport, method, path, body, signal) {
  const reply = await transport.request(method, path, body, signal);
  if (reply.status < 200 || reply.status >= 300) {
    throw new ApiError(reply.status, errorText(reply), reply.retryAfter);
  }
  return reply.body;
}

/**
 * An AbortController that also aborts when `parent` does.
 * @param {AbortSignal} [parent]
 */
function linkedController(parent) {
  const controller = new AbortController();
  if (parent) {
    if (parent.aborted) controller.abort();
    else parent.addEventListener("abort", () => controller.abort(), { once: true });
  }
  return controller;
}

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

/**
 * Requests relayed by the kernel over the widget's comm.
 * @implements {Transport}
 */
export class RelayTransport {
  /**
   * @param {CommModel} model
   * @param {{ stallMs?: number, requestTimeoutMs?: number }} [options]
   */
  constructor(model, options = {}) {
    /** @type {"relay"} */
    this.kind = "relay";
    this.model = model;
    this.stallMs = options.stallMs ?? STALL_MS;
    this.requestTimeoutMs = options.requestTimeoutMs ?? RELAY_REQUEST_TIMEOUT_MS;
    /** Per-transport prefix: every view of the model sees every reply, so ids must be unique across views. */
    this.prefix = randomId();
    this.counter = 0;
    /** @type {Map<string, (reply: import("./protocol.js").CommReply) => void>} */
    this.pending = new Map();
    /** @param {unknown} msg */
    this.onMessage = (msg) => {
      if (!msg || typeof msg !== "object") return;
      const reply = /** @type {import("./protocol.js").CommReply} */ (msg);
      const handler = typeof reply.id === "string" ? this.pending.get(reply.id) : undefined;
      if (handler) handler(reply);
    };
    model.on("msg:custom", this.onMessage);
  }

  nextId() {
    this.counter += 1;
    return `${this.prefix}-${this.counter}`;
  }

  /**
   * @param {string} id
   * @param {string} method
   * @param {string} path
   * @param {unknown} body
   */
  send(id, method, path, body) {
    /** @type {import("./protocol.js").CommRequest} */
    const request = {
      type: "request",
      id,
      method: /** @type {"GET" | "POST" | "PATCH" | "DELETE"} */ (method),
      path: path.replace(/^\/+/, ""),
      body: body === undefined ? null : body,
    };
    this.model.send(request);
  }

  /**
   * @param {string} method
   * @param {string} path
   * @param {unknown} [body]
   * @param {AbortSignal} [signal]
   * @returns {Promise<ApiReply>}
   */
  request(method, path, body, signal) {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(abortError());
      const id = this.nextId();
      const finish = () => {
        clearTimeout(timer);
        this.pending.delete(id);
        signal?.removeEventListener("abort", onAbort);
      };
      const onAbort = () => {
        finish();
        reject(abortError());
      };
      const timer = setTimeout(() => {
        finish();
        reject(new NetworkError(`the kernel did not answer within ${this.requestTimeoutMs / 1000} s`));
      }, this.requestTimeoutMs);
      signal?.addEventListener("abort", onAbort, { once: true });
      this.pending.set(id, (reply) => {
        if (reply.type !== "response") return;
        finish();
        const retryAfter = reply.body && typeof reply.body.retry_after === "number" ? reply.body.retry_after : null;
        resolve({ status: reply.status, body: reply.body, retryAfter });
      });
      try {
        this.send(id, method, path, body);
      } catch (err) {
        finish();
        reject(new NetworkError(err instanceof Error ? err.message : String(err)));
      }
    });
  }

  /**
   * @param {string} method
   * @param {string} path
   * @param {unknown} body
   * @param {EventHandler} onEvent
   * @param {AbortSignal} [signal]
   * @returns {Promise<void>}
   */
  stream(method, path, body, onEvent, signal) {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(abortError());
      const id = this.nextId();
      /** @type {ReturnType<typeof setTimeout> | undefined} */
      let timer;
      const finish = () => {
        clearTimeout(timer);
        this.pending.delete(id);
        signal?.removeEventListener("abort", onAbort);
      };
      const onAbort = () => {
        finish();
        reject(abortError());
      };
      const armStallTimer = () => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          finish();
          reject(new StallError());
        }, this.stallMs);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.pending.set(id, (reply) => {
        armStallTimer();
        try {
          if (reply.type === "event") {
            onEvent(reply.event, reply.data);
          } else if (reply.type === "end") {
            finish();
            resolve();
          } else if (reply.type === "response") {
            // The relay answers a stream it could not start (4xx) with a plain response.
            finish();
            if (reply.status >= 200 && reply.status < 300) resolve();
            else {
              const retryAfter = reply.body && typeof reply.body.retry_after === "number" ? reply.body.retry_after : null;
              reject(new ApiError(reply.status, errorText({ status: reply.status, body: reply.body, retryAfter }), retryAfter));
            }
          }
        } catch (err) {
          finish();
          reject(err);
        }
      });
      armStallTimer();
      try {
        this.send(id, method, path, body);
      } catch (err) {
        finish();
        reject(new NetworkError(err instanceof Error ? err.message : String(err)));
      }
    });
  }

  close() {
    this.model.off("msg:custom", this.onMessage);
    this.pending.clear();
  }
}

function randomId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  return `${Date.now().toString(36)}${Math.random().toString(36).slice(2)}`;
}

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
