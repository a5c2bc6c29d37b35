// The relay route to the r3nb API: requests sent over the widget's comm and answered by
// the kernel (embedded mode, or no server extension reachable). Replies are matched by
// request id, never by order; every view of the model sees every reply.

import { ApiError, NetworkError, STALL_MS, StallError, abortError, errorText } from "./api.js";

/** @typedef {import("./api.js").ApiReply} ApiReply */
/** @typedef {import("./api.js").EventHandler} EventHandler */
/** @typedef {import("./api.js").Transport} Transport */

/**
 * The subset of the anywidget model this module uses.
 * @typedef {object} CommModel
 * @property {(content: any) => void} send
 * @property {(name: string, cb: (...args: any[]) => void) => void} on
 * @property {(name?: string | null, cb?: ((...args: any[]) => void) | null) => void} off
 */

/** A relayed plain request the kernel never answers (kernel restarted) must not hang a poll. */
const RELAY_REQUEST_TIMEOUT_MS = 60_000;

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
