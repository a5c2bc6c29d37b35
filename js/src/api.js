// What every route to the r3nb API shares (transport.js picks the route): the shape of a
// reply, the errors a call ends with, and `call`, which turns a refusal into an ApiError.

import { STALL_SECONDS } from "./protocol.js";

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

/** No byte (not even a heartbeat) for this long means the stream is dead. */
export const STALL_MS = STALL_SECONDS * 1000;

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

export function abortError() {
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
export function linkedController(parent) {
  const controller = new AbortController();
  if (parent) {
    if (parent.aborted) controller.abort();
    else parent.addEventListener("abort", () => controller.abort(), { once: true });
  }
  return controller;
}
