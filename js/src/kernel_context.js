// `@name` in the panel's input: the panel's own kernel resolves it, over the widget's comm.
//
// The page cannot see the kernel's variables, and the server must not be the one to look
// (it would read whatever a page asked for); the kernel describes its own variables with
// the bounds `%%chat` uses (r3nb/kernel/context.py). A kernel runs comm messages between
// cells, so a busy kernel answers only when its cell ends: every question here is
// bounded, and a question without an answer in time is reported as "busy", never awaited.
//
// Wire (r3nb/kernel/panel.py, ContextRequest / ContextReply):
//   page → kernel  {type: "context", id, op: "resolve", prompt}
//                  {type: "context", id, op: "complete", prefix}
//   kernel → page  {type: "context-reply", id, ok, error?, attachments?, names?}

/** How long a send waits for the kernel to resolve its `@name`s before saying it is busy. */
export const RESOLVE_TIMEOUT_MS = 3000;
/** Completion is a nicety: give up sooner. */
export const COMPLETE_TIMEOUT_MS = 1500;

/**
 * @typedef {object} ContextReply
 * @property {"context-reply"} type
 * @property {string} id
 * @property {boolean} ok
 * @property {string} [error]
 * @property {import("./protocol.js").Attachment[]} [attachments]
 * @property {{ name: string, type: string }[]} [names]
 */

/**
 * The answer as the panel uses it: `busy` when the kernel did not answer in time.
 * @typedef {{ ok: true, reply: ContextReply } | { ok: false, busy: boolean, error: string }} ContextAnswer
 */

// Python's `(?<![\w.@`])@([A-Za-z_]\w*)`, outside code spans and fences: only a hint of
// whether to ask the kernel at all (a prompt without `@name` never waits on it); the
// kernel decides what the names are.
const MENTION = /(?<![\p{L}\p{N}_.@`])@([A-Za-z_][\p{L}\p{N}_]*)/gu;
const CODE = /```[\s\S]*?(?:```|$)|~~~[\s\S]*?(?:~~~|$)|`[^`\n]*`/g;

/**
 * The `@name`s of a prompt, in order, each once.
 * @param {string} text
 * @returns {string[]}
 */
export function mentions(text) {
  const seen = new Set();
  for (const m of text.replace(CODE, " ").matchAll(MENTION)) seen.add(m[1]);
  return [...seen];
}

/**
 * The name being typed after an `@` that ends at `caret`, or null when none is.
 * @param {string} text
 * @param {number} caret
 * @returns {{ start: number, prefix: string } | null}  start: the index of the `@`
 */
export function typedMention(text, caret) {
  const m = /(?:^|[^\p{L}\p{N}_.@`])@([A-Za-z_][\p{L}\p{N}_]*)?$/u.exec(text.slice(0, caret));
  if (!m) return null;
  const prefix = m[1] ?? "";
  return { start: caret - prefix.length - 1, prefix };
}

/** Questions to the panel's kernel, matched to their answers by id. */
export class KernelContext {
  /**
   * @param {import("./panel.js").WidgetModel} model
   * @param {AbortSignal} signal
   */
  constructor(model, signal) {
    this.model = model;
    this.prefix = Math.random().toString(36).slice(2, 10); // every view sees every reply
    this.counter = 0;
    /** @type {Map<string, (reply: ContextReply) => void>} */
    this.pending = new Map();
    /** @param {unknown} msg */
    const onMessage = (msg) => {
      const reply = /** @type {ContextReply} */ (msg);
      if (!reply || typeof reply !== "object" || reply.type !== "context-reply") return;
      this.pending.get(reply.id)?.(reply);
    };
    model.on("msg:custom", onMessage);
    signal.addEventListener("abort", () => {
      model.off("msg:custom", onMessage);
      for (const settle of this.pending.values()) settle(/** @type {ContextReply} */ ({ type: "context-reply", id: "", ok: false, error: "closed" }));
    }, { once: true });
  }

  /**
   * The attachments for the `@name`s of `prompt`.
   * @param {string} prompt
   * @param {number} [timeoutMs]
   * @returns {Promise<ContextAnswer>}
   */
  resolve(prompt, timeoutMs = RESOLVE_TIMEOUT_MS) {
    return this.ask({ op: "resolve", prompt }, timeoutMs);
  }

  /**
   * The kernel's variables whose names start with `prefix`.
   * @param {string} prefix
   * @param {number} [timeoutMs]
   * @returns {Promise<ContextAnswer>}
   */
  complete(prefix, timeoutMs = COMPLETE_TIMEOUT_MS) {
    return this.ask({ op: "complete", prefix }, timeoutMs);
  }

  /**
   * @param {{ op: "resolve", prompt: string } | { op: "complete", prefix: string }} question
   * @param {number} timeoutMs
   * @returns {Promise<ContextAnswer>}
   */
  ask(question, timeoutMs) {
    const id = `${this.prefix}-ctx-${++this.counter}`;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve({ ok: false, busy: true, error: `the kernel did not answer within ${timeoutMs / 1000} s (it is busy running a cell, or gone)` });
      }, timeoutMs);
      this.pending.set(id, (reply) => {
        clearTimeout(timer);
        this.pending.delete(id);
        if (reply.ok) resolve({ ok: true, reply });
        else resolve({ ok: false, busy: false, error: reply.error || "the kernel refused" });
      });
      try {
        this.model.send({ type: "context", id, ...question });
      } catch (err) {
        this.pending.get(id)?.({ type: "context-reply", id, ok: false, error: `the kernel is not reachable (${err instanceof Error ? err.message : String(err)})` });
      }
    });
  }
}
