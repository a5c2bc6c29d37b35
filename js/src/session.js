// One open conversation in one view: its messages, the poll loop, live streams, Send/Stop.
//
// Who updates a message's text:
// - a message this panel's kernel is streaming (its own Send, a %%chat cell, or either after
//   a page reload) is followed live over SSE, from the code points already held;
// - every other message comes from snapshot polls, which name the streaming messages held
//   (`from=MID:N`) so the server sends only the new text.
// A message is owned by exactly one of the two at a time (`entry.live`); snapshots skip live
// ones. When a live stream stalls or fails, the poll takes over from that message's revision.
//
// Observers are pushed, not polled, where the server offers it: after the first snapshot
// the session opens `GET conversations/{cid}/watch?since=REV&from=…`, whose `snapshot`
// events are what a poll would have returned and whose `delta` events carry the text
// after what is held. A 404/405 (an older server; embedded mode has no watch at all)
// turns it off for the session; a broken watch stream hands over to one poll, which
// opens a new watch (after three breaks in a row the session keeps polling).
//
// Only the conversation's current branch is shown. A snapshot whose header changed names the
// branch's ids: messages not in it go (another version was chosen, a turn was deleted), and
// one we hold nowhere means another branch was chosen: load the whole conversation again.

import { MessageView } from "./message_view.js";
import { FINAL_STATUSES, codePointLength, codePointSlice } from "./protocol.js";
import { ApiError, NetworkError, StallError, call, isAbort } from "./transport.js";

/** @typedef {import("./protocol.js").MessageDict} MessageDict */
/** @typedef {import("./protocol.js").SnapshotMessage} SnapshotMessage */
/** @typedef {import("./protocol.js").Snapshot} Snapshot */
/** @typedef {import("./protocol.js").ConversationDict} ConversationDict */
/** @typedef {import("./transport.js").Transport} Transport */

/**
 * What the panel gives a session.
 * @typedef {object} SessionHost
 * @property {Transport} transport
 * @property {HTMLElement} list                the message list element
 * @property {import("./sanitize.js").Sanitize} sanitize
 * @property {() => string} kernelId
 * @property {() => { snapshotMs: number, idleMs: number }} intervals
 * @property {(key: string, text: string) => void} setStatus   "" clears that key
 * @property {() => void} onBusyChange         Send/Stop state may have changed
 * @property {() => void} [onReplyDone]         a reply this panel followed live ended (done)
 * @property {() => void} onRender             a message's text was rendered
 * @property {() => void} onPoll               a snapshot poll completed
 * @property {(open: boolean) => void} [onWatching]   the watch stream opened or ended
 * @property {(conversation: ConversationDict) => void} onConversation
 * @property {() => void} onGone               the conversation was deleted
 * @property {() => boolean} isShown           false while the view is detached
 */

/**
 * @typedef {object} Entry
 * @property {MessageDict} msg      content is the full text held so far
 * @property {number} length        code points in msg.content
 * @property {MessageView} view
 * @property {boolean} live         a live stream owns this message
 * @property {boolean} liveFailed   a live stream failed once: polls own it from now on
 */

/** A delta skipped text: the stream must restart from what we hold. */
class GapError extends Error {}

const MAX_BACKOFF_MS = 60_000;

export class Session {
  /**
   * @param {string} cid
   * @param {SessionHost} host
   */
  constructor(cid, host) {
    this.cid = cid;
    this.host = host;
    this.controller = new AbortController();
    /** @type {Map<string, Entry>} */
    this.entries = new Map();
    /** @type {number | null} null until the first snapshot: then the next poll asks for all */
    this.revision = null;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.pollTimer = undefined;
    this.polling = false;
    /** A poll was asked for while one ran: run again right after it. */
    this.pollAgain = false;
    this.failures = 0;
    this.sending = false;
    this.stopRequested = false;
    /** @type {Promise<void> | undefined} */
    this.started = undefined;
    /** @type {Set<string>} replies whose prompt's pinned messages alone exceeded the window (live only) */
    this.overBudget = new Set();
    /** @type {AbortController | null} the open watch stream, if any */
    this.watchController = null;
    /** The server has no watch route (404/405): poll for the rest of this session. */
    this.watchUnavailable = false;
    /** Watch streams that broke in a row (reset by one that delivered an event). */
    this.watchBreaks = 0;
  }

  get disposed() {
    return this.controller.signal.aborted;
  }

  /** Loads the conversation; resolves after the first snapshot attempt (once per session). */
  start() {
    this.started ??= this.poll();
    return this.started;
  }

  dispose() {
    this.controller.abort(); // ends the watch stream too
    clearTimeout(this.pollTimer);
    for (const entry of this.entries.values()) entry.view.dispose();
    this.entries.clear();
  }

  /** Whether this panel's own stream runs (Send hidden, Stop shown). */
  busy() {
    if (this.sending) return true;
    for (const entry of this.entries.values()) if (entry.live && entry.msg.status === "streaming") return true;
    return false;
  }

  // --- polling -------------------------------------------------------------------------

  /** @param {number} delayMs */
  schedulePoll(delayMs) {
    if (this.disposed) return;
    // A watch is open: end it instead, and its end polls at once, then watches again from
    // what is held (after a Send, a branch switch, a resync).
    if (this.watchController) return void this.watchController.abort();
    clearTimeout(this.pollTimer);
    this.pollTimer = setTimeout(() => void this.poll(), delayMs);
  }

  /** One snapshot poll, then the next one is scheduled (never two at once). */
  async poll() {
    if (this.disposed) return;
    if (this.polling) {
      this.pollAgain = true; // the running poll schedules the next one
      return;
    }
    clearTimeout(this.pollTimer);
    if (this.revision !== null && !this.host.isShown()) {
      this.schedulePoll(this.host.intervals().idleMs); // a detached view (Notebook 7) stays quiet
      return;
    }
    this.polling = true;
    let delay;
    try {
      const snapshot = /** @type {Snapshot} */ (await call(this.host.transport, "GET", this.snapshotPath(), undefined, this.controller.signal));
      this.failures = 0;
      this.host.setStatus("poll", "");
      // Only the request above says whether the server is reachable: a failure to show
      // what it sent is ours, and is no reason to report the connection down.
      try {
        this.applySnapshot(snapshot);
      } catch (err) {
        console.error("r3nb: a snapshot could not be applied", err);
      }
      this.host.onPoll();
      if (this.canWatch()) void this.watch();
      else if (!this.watchController) delay = this.nextInterval(); // a watch brings what follows
    } catch (err) {
      if (this.disposed || isAbort(err)) return;
      delay = this.pollFailed(err);
    } finally {
      this.polling = false;
    }
    if (delay !== undefined) this.schedulePoll(this.pollAgain && this.failures === 0 ? 0 : delay);
    this.pollAgain = false;
  }

  snapshotPath(suffix = "") {
    let path = `conversations/${encodeURIComponent(this.cid)}${suffix}`;
    if (this.revision === null) return path;
    path += `?since=${this.revision}`;
    const held = [];
    for (const [id, entry] of this.entries) if (entry.msg.status === "streaming") held.push(`${id}:${entry.length}`);
    if (held.length) path += `&from=${held.join(",")}`;
    return path;
  }

  nextInterval() {
    const { snapshotMs, idleMs } = this.host.intervals();
    for (const entry of this.entries.values()) if (entry.msg.status === "streaming" && !entry.live) return snapshotMs;
    return idleMs;
  }

  /**
   * @param {unknown} err
   * @returns {number | undefined} the delay before the next attempt, none when gone
   */
  pollFailed(err) {
    if (err instanceof ApiError && err.status === 404) {
      this.host.onGone();
      return undefined;
    }
    this.failures += 1;
    const base = this.host.intervals().snapshotMs;
    const delay = Math.min(MAX_BACKOFF_MS, base * 2 ** Math.min(this.failures, 6));
    const why = err instanceof Error ? err.message : String(err);
    const text = err instanceof ApiError ? why : `Cannot reach the server (${why}); retrying in ${Math.round(delay / 1000)} s`;
    this.host.setStatus("poll", text);
    return delay;
  }

  // --- watching --------------------------------------------------------------------------

  /** Whether the next update should come from a watch stream rather than a poll. */
  canWatch() {
    return Boolean(this.host.transport.canWatch) && !this.watchUnavailable && this.watchBreaks < 3
      && this.watchController === null && this.revision !== null && this.host.isShown();
  }

  /**
   * Follows the conversation over its watch stream until it ends, then hands over to a
   * poll (which opens the next watch, unless the route is missing or keeps breaking).
   */
  async watch() {
    const controller = new AbortController();
    const abort = () => controller.abort();
    this.controller.signal.addEventListener("abort", abort);
    this.watchController = controller;
    let opened = false;
    /** @param {string} event @param {any} data */
    const handler = (event, data) => {
      this.watchBreaks = 0;
      if (!opened) {
        opened = true;
        this.host.onWatching?.(true);
      }
      if (event === "snapshot") {
        this.applySnapshot(data); // a resync in it ends this watch: schedulePoll above
        this.host.onPoll();
      } else if (event === "delta") {
        const entry = this.entries.get(data.message_id);
        if (entry && !entry.live) this.applyDelta(entry, data.offset, data.text);
      }
    };
    let delay = 0;
    try {
      await this.host.transport.stream("GET", this.snapshotPath("/watch"), undefined, handler, controller.signal);
    } catch (err) {
      if (this.disposed) return;
      if (err instanceof ApiError && (err.status === 404 || err.status === 405)) {
        this.watchUnavailable = true; // an older server; a deleted conversation: the poll says which
      } else if (err instanceof GapError) {
        this.revision = null; // text went missing: load everything again
      } else if (!isAbort(err)) {
        this.watchBreaks += 1;
        delay = this.host.intervals().snapshotMs;
      }
    } finally {
      this.controller.signal.removeEventListener("abort", abort);
      this.watchController = null;
      if (opened) this.host.onWatching?.(false);
    }
    if (!this.disposed) this.schedulePoll(delay);
  }

  /** @param {Snapshot} snapshot */
  applySnapshot(snapshot) {
    if (snapshot.conversation) this.host.onConversation(snapshot.conversation); // null: unchanged
    let resync = false;
    for (const msg of snapshot.messages) {
      const entry = this.entries.get(msg.id);
      if (entry?.live) continue;
      if (msg.offset == null) this.upsert(msg);
      // An offset update carries only the fields that change while streaming: merge.
      // We may already hold part of it (our own live stream, a watch restarted): append the rest.
      else if (entry && entry.length >= msg.offset && entry.length <= msg.offset + codePointLength(msg.content)) {
        const fresh = codePointSlice(msg.content, entry.length - msg.offset);
        this.upsert({ ...entry.msg, ...msg, content: entry.msg.content + fresh }, fresh);
      } else resync = true; // we no longer hold what the server appended to: reload everything
    }
    if (Array.isArray(snapshot.branch) && !this.followBranch(snapshot.branch, snapshot.revision)) resync = true;
    this.revision = resync ? null : Math.max(this.revision ?? 0, snapshot.revision);
    for (const entry of this.entries.values()) this.maybeFollow(entry);
    if (resync) this.schedulePoll(0);
  }

  /**
   * Keeps only the messages of the current branch.
   * @param {string[]} branch   its ids, in order
   * @param {number} revision   what the snapshot naming it is consistent with
   * @returns {boolean} false when it names a message held nowhere (reload everything)
   */
  followBranch(branch, revision) {
    const on = new Set(branch);
    for (const [id, entry] of this.entries) {
      // A message we learned of after this snapshot (our own prompt's `start`) stays.
      if (!on.has(id) && !entry.live && entry.msg.revision <= revision) this.drop(id);
    }
    return branch.every((id) => this.entries.has(id));
  }

  /** @param {string} id */
  drop(id) {
    const entry = this.entries.get(id);
    if (!entry) return;
    entry.view.dispose();
    this.entries.delete(id);
  }

  /**
   * A new version of a message starts: it and what followed it leave the branch shown.
   * @param {number} seq            the replaced message's
   * @param {string[]} keep         the new messages
   */
  dropFrom(seq, keep) {
    for (const [id, entry] of this.entries) {
      if (entry.msg.seq >= seq && !keep.includes(id) && !entry.live) this.drop(id);
    }
  }

  // --- messages --------------------------------------------------------------------------

  /**
   * Adds or updates a message from a complete MessageDict.
   * @param {MessageDict} msg     `content` is the full text
   * @param {string} [appended]   the part of `content` that is new, when known
   * @returns {Entry}
   */
  upsert(msg, appended) {
    let entry = this.entries.get(msg.id);
    if (!entry) {
      const view = new MessageView(this.host.list.ownerDocument, { sanitize: this.host.sanitize, onRender: this.host.onRender }, msg.role);
      entry = { msg: { ...msg, content: "" }, length: 0, view, live: false, liveFailed: false };
      this.entries.set(msg.id, entry);
      this.insertInOrder(entry);
    }
    entry.msg = msg;
    entry.length = appended !== undefined ? entry.length + codePointLength(appended) : codePointLength(msg.content);
    entry.view.update(msg, this.host.kernelId());
    if (appended !== undefined && !FINAL_STATUSES.has(msg.status)) entry.view.appendText(appended);
    else entry.view.setText(msg.content, FINAL_STATUSES.has(msg.status));
    return entry;
  }

  /** @param {Entry} entry */
  insertInOrder(entry) {
    const seq = entry.msg.seq;
    let before = null;
    for (const other of this.entries.values()) {
      if (other !== entry && other.msg.seq > seq && (!before || other.msg.seq < before.msg.seq)) before = other;
    }
    this.host.list.insertBefore(entry.view.el, before ? before.view.el : null);
  }

  /**
   * Metadata from a stream's `start`: the text stays ours (the deltas bring it).
   * @param {MessageDict} msg
   */
  adoptMetadata(msg) {
    const entry = this.entries.get(msg.id);
    if (!entry) return this.upsert(msg);
    entry.msg = { ...msg, content: entry.msg.content };
    entry.view.update(entry.msg, this.host.kernelId());
    return entry;
  }

  /**
   * @param {Entry} entry
   * @param {number} offset   code point offset of `text`
   * @param {string} text
   */
  applyDelta(entry, offset, text) {
    if (offset > entry.length) throw new GapError();
    const fresh = offset === entry.length ? text : codePointSlice(text, entry.length - offset);
    if (!fresh) return; // already held (a resync overlap)
    entry.msg.content += fresh;
    entry.length += codePointLength(fresh);
    entry.view.appendText(fresh);
  }

  /**
   * The handler for start/delta/done/error events of a stream that owns `getEntry()`.
   * @param {() => Entry | null} getEntry
   * @param {(entry: Entry, start: import("./protocol.js").StartEvent) => void} onStart
   * @returns {(event: string, data: any) => void}
   */
  streamHandler(getEntry, onStart) {
    return (event, data) => {
      if (event === "start") {
        if (data.user_message) this.upsert(data.user_message);
        if (data.context_pinned_over_budget === true) this.overBudget.add(data.assistant_message.id);
        const entry = this.adoptMetadata(data.assistant_message);
        entry.live = true;
        onStart(entry, data);
      } else if (event === "delta") {
        const entry = getEntry();
        if (entry && data.message_id === entry.msg.id) this.applyDelta(entry, data.offset, data.text);
      } else if (event === "done") {
        const entry = getEntry();
        if (entry && data.message.id === entry.msg.id) {
          this.upsert(data.message);
          this.host.onReplyDone?.();
        }
      } else if (event === "error") {
        this.host.setStatus("stream", data && typeof data.error === "string" ? data.error : "The stream failed");
      }
      this.host.onBusyChange();
    };
  }

  // --- live streams ----------------------------------------------------------------------

  /**
   * Follows a message our kernel streams (a %%chat cell, or our own Send after a reload).
   * @param {Entry} entry
   */
  maybeFollow(entry) {
    const { msg } = entry;
    const kernelId = this.host.kernelId();
    if (this.sending || entry.live || entry.liveFailed || msg.status !== "streaming") return;
    if (!kernelId || msg.streaming_for !== kernelId || msg.role !== "assistant") return;
    void this.follow(entry);
  }

  /**
   * Streams `entry` from the code points held until it is final, resyncing on gaps.
   * @param {Entry} entry
   */
  async follow(entry) {
    entry.live = true;
    this.host.onBusyChange();
    const handler = this.streamHandler(() => entry, () => {});
    for (let attempt = 0; !this.disposed && entry.msg.status === "streaming"; attempt++) {
      try {
        if (attempt >= 3) throw new Error("the stream kept ending early");
        const path = `messages/${encodeURIComponent(entry.msg.id)}/stream?offset=${entry.length}`;
        await this.host.transport.stream("GET", path, undefined, handler, this.controller.signal);
      } catch (err) {
        if (this.disposed || isAbort(err)) return;
        if (err instanceof GapError) continue;
        this.fallBackToPolling(entry, err);
        return;
      }
    }
    entry.live = false;
    this.host.onBusyChange();
  }

  /**
   * @param {Entry} entry
   * @param {unknown} err
   */
  fallBackToPolling(entry, err) {
    entry.live = false;
    entry.liveFailed = true;
    // Snapshots skipped this message while the stream owned it: ask again from its revision.
    if (this.revision !== null) this.revision = Math.min(this.revision, entry.msg.revision);
    if (!(err instanceof StallError)) {
      this.host.setStatus("stream", `Live stream lost (${err instanceof Error ? err.message : String(err)}); following by polling`);
    }
    this.host.onBusyChange();
    this.schedulePoll(0);
  }

  // --- Send / Stop / Retry -------------------------------------------------------------

  /**
   * Sends a prompt and follows the reply live.
   * @param {string} content
   * @param {string} model   "" for the server's default
   * @param {string} [replaces]   a user message this prompt is a new version of (edit)
   * @param {import("./protocol.js").Attachment[]} [attachments]  `@name`s, cells (kernel_context.js)
   * @returns {Promise<boolean>} whether the server accepted it (false → give the text back)
   */
  send(content, model, replaces = "", attachments = []) {
    /** @type {Record<string, any>} */
    const body = { content };
    if (model) body.model = model;
    if (attachments.length) body.attachments = attachments;
    const base = `conversations/${encodeURIComponent(this.cid)}/messages`;
    if (!replaces) return this.exchange(base, body, null);
    return this.exchange(`${base}/${encodeURIComponent(replaces)}/edit`, body, this.entries.get(replaces)?.msg.seq ?? null);
  }

  /**
   * Asks for a new version of reply `id` and follows it live.
   * @param {string} id
   * @param {string} model   "" for the model of that reply
   * @returns {Promise<boolean>} whether the server accepted it
   */
  regenerate(id, model) {
    /** @type {Record<string, string>} */
    const body = {};
    if (model) body.model = model;
    const path = `conversations/${encodeURIComponent(this.cid)}/messages/${encodeURIComponent(id)}/regenerate`;
    return this.exchange(path, body, this.entries.get(id)?.msg.seq ?? null);
  }

  /**
   * Posts a prompt (or a regenerate) and follows the reply live.
   * @param {string} path
   * @param {Record<string, string>} body
   * @param {number | null} forkSeq   the replaced message's seq: it and what follows go
   * @returns {Promise<boolean>}
   */
  async exchange(path, body, forkSeq) {
    if (this.sending) return false;
    this.sending = true;
    this.stopRequested = false;
    this.host.setStatus("send", "");
    this.host.setStatus("stream", "");
    this.host.onBusyChange();
    /** @type {Entry | null} */
    let reply = null;
    const handler = this.streamHandler(() => reply, (entry, start) => {
      reply = entry;
      if (forkSeq !== null) this.dropFrom(forkSeq, [entry.msg.id, start.user_message?.id ?? ""]);
      if (this.stopRequested) void this.cancel(entry);
    });
    const kernelId = this.host.kernelId();
    if (kernelId) body.kernel_id = kernelId;
    try {
      await this.host.transport.stream("POST", path, body, handler, this.controller.signal);
    } catch (err) {
      if (this.disposed || isAbort(err)) return reply !== null;
      if (!reply) {
        this.host.setStatus("send", sendErrorText(err));
      } else if (!(err instanceof GapError)) {
        this.fallBackToPolling(reply, err);
      }
    } finally {
      this.sending = false;
    }
    const started = /** @type {Entry | null} */ (reply);
    if (started && started.msg.status === "streaming" && !started.liveFailed) await this.follow(started);
    if (started) started.live = false;
    this.host.onBusyChange();
    this.schedulePoll(0);
    return started !== null;
  }

  // --- branches --------------------------------------------------------------------------

  /**
   * Shows the version `id` of a message (and the newest turn under it).
   * @param {string} id
   */
  async switchTo(id) {
    const path = `conversations/${encodeURIComponent(this.cid)}/head`;
    if (!(await this.branchCall("POST", path, { message_id: id }, "Switching versions"))) return;
    this.revision = null; // another branch: load it whole
    this.schedulePoll(0);
  }

  /**
   * Deletes the turn of prompt `id`.
   * @param {string} id
   */
  async deleteTurn(id) {
    const path = `conversations/${encodeURIComponent(this.cid)}/messages/${encodeURIComponent(id)}`;
    const reply = await this.branchCall("DELETE", path, undefined, "Delete");
    if (!reply) return;
    for (const gone of reply.deleted ?? []) this.drop(gone);
    this.schedulePoll(0);
  }

  /**
   * @param {string} method
   * @param {string} path
   * @param {unknown} body
   * @param {string} what   names the action in an error
   * @returns {Promise<any>} the reply, null when it failed (the status line says why)
   */
  async branchCall(method, path, body, what) {
    try {
      const reply = await call(this.host.transport, method, path, body, this.controller.signal);
      this.host.setStatus("send", "");
      return reply ?? {};
    } catch (err) {
      if (this.disposed || isAbort(err)) return null;
      this.host.setStatus("send", `${what} failed: ${err instanceof Error ? err.message : String(err)}`);
      return null;
    }
  }

  /** Stop: cancels every stream this panel follows live (usually one). */
  stop() {
    let found = false;
    for (const entry of this.entries.values()) {
      if (entry.live && entry.msg.status === "streaming") {
        found = true;
        void this.cancel(entry);
      }
    }
    if (!found && this.sending) this.stopRequested = true; // cancel as soon as `start` names it
  }

  /** @param {Entry} entry */
  async cancel(entry) {
    try {
      const reply = await call(this.host.transport, "POST", `messages/${encodeURIComponent(entry.msg.id)}/cancel`, {}, this.controller.signal);
      if (reply && reply.message && FINAL_STATUSES.has(reply.message.status)) this.upsert(reply.message);
    } catch (err) {
      if (this.disposed || isAbort(err)) return;
      this.host.setStatus("send", `Stop failed: ${err instanceof Error ? err.message : String(err)}`);
    }
    this.host.onBusyChange();
  }

  /**
   * Pins (always sent to the model), excludes (never sent) or unmarks message `id`.
   * @param {string} id
   * @param {"pinned" | "excluded" | null} mark
   * @returns {Promise<boolean>} whether the server took it
   */
  async mark(id, mark) {
    const path = `conversations/${encodeURIComponent(this.cid)}/messages/${encodeURIComponent(id)}`;
    const reply = await this.branchCall("PATCH", path, { context: mark }, mark === "pinned" ? "Pin" : mark === "excluded" ? "Exclude" : "Unmark");
    const entry = this.entries.get(id);
    if (!reply?.message || !entry) return false;
    // Only the mark: the text we hold may be newer than the row (a reply still streaming).
    entry.msg = Object.assign({}, entry.msg, { context: reply.message.context ?? null });
    entry.view.update(entry.msg, this.host.kernelId());
    return true;
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
