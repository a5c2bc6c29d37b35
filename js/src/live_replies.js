// The replies one session follows live over SSE: its own Send (a prompt, an edit, a
// regenerate), a reply its kernel streams (a %%chat cell, or a Send before a page
// reload), and Stop. A live stream owns its message (`entry.live`) until the reply is
// final; when it stalls or fails, the session's polls take over from that message's
// revision (`fallBackToPolling`).

import { GapError } from "./message_list.js";
import { FINAL_STATUSES } from "./protocol.js";
import { ApiError, NetworkError, StallError, call, isAbort } from "./api.js";

/** @typedef {import("./message_list.js").Entry} Entry */
/** @typedef {import("./session.js").Session} Session */

export class LiveReplies {
  /** @param {Session} session  the conversation these replies belong to */
  constructor(session) {
    this.session = session;
    this.sending = false;
    this.stopRequested = false;
    /** @type {Set<string>} replies whose prompt's pinned messages alone exceeded the window (live only) */
    this.overBudget = new Set();
  }

  /**
   * The handler for start/delta/done/error events of a stream that owns `getEntry()`.
   * @param {() => Entry | null} getEntry
   * @param {(entry: Entry, start: import("./protocol.js").StartEvent) => void} onStart
   * @returns {(event: string, data: any) => void}
   */
  streamHandler(getEntry, onStart) {
    const { host, messages } = this.session;
    return (event, data) => {
      if (event === "start") {
        if (data.user_message) messages.upsert(data.user_message);
        if (data.context_pinned_over_budget === true) this.overBudget.add(data.assistant_message.id);
        const entry = messages.adoptMetadata(data.assistant_message);
        entry.live = true;
        onStart(entry, data);
      } else if (event === "delta") {
        const entry = getEntry();
        if (entry && data.message_id === entry.msg.id) messages.applyDelta(entry, data.offset, data.text);
      } else if (event === "done") {
        const entry = getEntry();
        if (entry && data.message.id === entry.msg.id) {
          messages.upsert(data.message);
          host.onReplyDone?.();
        }
      } else if (event === "error") {
        host.setStatus("stream", data && typeof data.error === "string" ? data.error : "The stream failed");
      }
      host.onBusyChange();
    };
  }

  /**
   * Follows a message our kernel streams (a %%chat cell, or our own Send after a reload).
   * @param {Entry} entry
   */
  maybeFollow(entry) {
    const { msg } = entry;
    const kernelId = this.session.host.kernelId();
    if (this.sending || entry.live || entry.liveFailed || msg.status !== "streaming") return;
    if (!kernelId || msg.streaming_for !== kernelId || msg.role !== "assistant") return;
    void this.follow(entry);
  }

  /**
   * Streams `entry` from the code points held until it is final, resyncing on gaps.
   * @param {Entry} entry
   */
  async follow(entry) {
    const session = this.session;
    entry.live = true;
    session.host.onBusyChange();
    const handler = this.streamHandler(() => entry, () => {});
    for (let attempt = 0; !session.disposed && entry.msg.status === "streaming"; attempt++) {
      try {
        if (attempt >= 3) throw new Error("the stream kept ending early");
        const path = `messages/${encodeURIComponent(entry.msg.id)}/stream?offset=${entry.length}`;
        await session.host.transport.stream("GET", path, undefined, handler, session.controller.signal);
      } catch (err) {
        if (session.disposed || isAbort(err)) return;
        if (err instanceof GapError) continue;
        this.fallBackToPolling(entry, err);
        return;
      }
    }
    entry.live = false;
    session.host.onBusyChange();
  }

  /**
   * @param {Entry} entry
   * @param {unknown} err
   */
  fallBackToPolling(entry, err) {
    const session = this.session;
    entry.live = false;
    entry.liveFailed = true;
    // Snapshots skipped this message while the stream owned it: ask again from its revision.
    if (session.revision !== null) session.revision = Math.min(session.revision, entry.msg.revision);
    if (!(err instanceof StallError)) {
      session.host.setStatus("stream", `Live stream lost (${err instanceof Error ? err.message : String(err)}); following by polling`);
    }
    session.host.onBusyChange();
    session.schedulePoll(0);
  }

  /**
   * Posts a prompt (or a regenerate) and follows the reply live.
   * @param {string} path
   * @param {Record<string, string>} body
   * @param {number | null} forkSeq   the replaced message's seq: it and what follows go
   * @returns {Promise<boolean>}
   */
  async exchange(path, body, forkSeq) {
    const session = this.session;
    const host = session.host;
    if (this.sending) return false;
    this.sending = true;
    this.stopRequested = false;
    host.setStatus("send", "");
    host.setStatus("stream", "");
    host.onBusyChange();
    /** @type {Entry | null} */
    let reply = null;
    const handler = this.streamHandler(() => reply, (entry, start) => {
      reply = entry;
      if (forkSeq !== null) session.messages.dropFrom(forkSeq, [entry.msg.id, start.user_message?.id ?? ""]);
      if (this.stopRequested) void this.cancel(entry);
    });
    const kernelId = host.kernelId();
    if (kernelId) body.kernel_id = kernelId;
    try {
      await host.transport.stream("POST", path, body, handler, session.controller.signal);
    } catch (err) {
      if (session.disposed || isAbort(err)) return reply !== null;
      if (!reply) {
        host.setStatus("send", sendErrorText(err));
      } else if (!(err instanceof GapError)) {
        this.fallBackToPolling(reply, err);
      }
    } finally {
      this.sending = false;
    }
    const started = /** @type {Entry | null} */ (reply);
    if (started && started.msg.status === "streaming" && !started.liveFailed) await this.follow(started);
    if (started) started.live = false;
    host.onBusyChange();
    session.schedulePoll(0);
    return started !== null;
  }

  /** Stop: cancels every stream this panel follows live (usually one). */
  stop() {
    let found = false;
    for (const entry of this.session.entries.values()) {
      if (entry.live && entry.msg.status === "streaming") {
        found = true;
        void this.cancel(entry);
      }
    }
    if (!found && this.sending) this.stopRequested = true; // cancel as soon as `start` names it
  }

  /** @param {Entry} entry */
  async cancel(entry) {
    const session = this.session;
    try {
      const reply = await call(session.host.transport, "POST", `messages/${encodeURIComponent(entry.msg.id)}/cancel`, {}, session.controller.signal);
      if (reply && reply.message && FINAL_STATUSES.has(reply.message.status)) session.messages.upsert(reply.message);
    } catch (err) {
      if (session.disposed || isAbort(err)) return;
      session.host.setStatus("send", `Stop failed: ${err instanceof Error ? err.message : String(err)}`);
    }
    session.host.onBusyChange();
  }
}

/** @param {unknown} err */
function sendErrorText(err) {
  if (err instanceof ApiError && err.status === 429) {
    return err.retryAfter != null ? `Rate limited, retry in ${err.retryAfter}s` : `Rate limited: ${err.message}`;
  }
  if (err instanceof ApiError) return err.message;
  if (err instanceof NetworkError || err instanceof StallError) return `Cannot reach the server (${err.message})`;
  return err instanceof Error ? err.message : String(err);
}
