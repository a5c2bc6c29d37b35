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
//
// The session owns the polls and the watch; the messages held are message_list.js's, the
// live streams (Send, regenerate, a kernel's reply, Stop) live_replies.js's.

import { LiveReplies } from "./live_replies.js";
import { GapError, MessageList } from "./message_list.js";
import { codePointLength, codePointSlice } from "./protocol.js";
import { ApiError, attachmentUrl, call, isAbort } from "./transport.js";

/** @typedef {import("./protocol.js").Snapshot} Snapshot */
/** @typedef {import("./protocol.js").ConversationDict} ConversationDict */
/** @typedef {import("./transport.js").Transport} Transport */
/** @typedef {import("./message_list.js").Entry} Entry */

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
    this.messages = new MessageList(host, (id) => attachmentUrl(host.transport, cid, id));
    this.live = new LiveReplies(this);
    /** @type {number | null} null until the first snapshot: then the next poll asks for all */
    this.revision = null;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.pollTimer = undefined;
    this.polling = false;
    /** A poll was asked for while one ran: run again right after it. */
    this.pollAgain = false;
    this.failures = 0;
    /** @type {Promise<void> | undefined} */
    this.started = undefined;
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

  /** The messages shown, by id (message_list.js keeps them). */
  get entries() {
    return this.messages.entries;
  }

  /** Whether our own Send (or regenerate) is being posted (live_replies.js). */
  get sending() {
    return this.live.sending;
  }

  /** Replies whose pinned messages alone exceeded the context window (live only). */
  get overBudget() {
    return this.live.overBudget;
  }

  /** Loads the conversation; resolves after the first snapshot attempt (once per session). */
  start() {
    this.started ??= this.poll();
    return this.started;
  }

  dispose() {
    this.controller.abort(); // ends the watch stream too
    clearTimeout(this.pollTimer);
    this.messages.dispose();
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
        if (entry && !entry.live) this.messages.applyDelta(entry, data.offset, data.text);
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
      if (msg.offset == null) this.messages.upsert(msg);
      // An offset update carries only the fields that change while streaming: merge.
      // We may already hold part of it (our own live stream, a watch restarted): append the rest.
      else if (entry && entry.length >= msg.offset && entry.length <= msg.offset + codePointLength(msg.content)) {
        const fresh = codePointSlice(msg.content, entry.length - msg.offset);
        this.messages.upsert({ ...entry.msg, ...msg, content: entry.msg.content + fresh }, fresh);
      } else resync = true; // we no longer hold what the server appended to: reload everything
    }
    if (Array.isArray(snapshot.branch) && !this.messages.followBranch(snapshot.branch, snapshot.revision)) resync = true;
    this.revision = resync ? null : Math.max(this.revision ?? 0, snapshot.revision);
    for (const entry of this.entries.values()) this.live.maybeFollow(entry);
    if (resync) this.schedulePoll(0);
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
    if (!replaces) return this.live.exchange(base, body, null);
    return this.live.exchange(`${base}/${encodeURIComponent(replaces)}/edit`, body, this.entries.get(replaces)?.msg.seq ?? null);
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
    return this.live.exchange(path, body, this.entries.get(id)?.msg.seq ?? null);
  }

  /** Stop: cancels every stream this panel follows live (usually one). */
  stop() {
    this.live.stop();
  }

  /**
   * Stops the reply of `entry`, whoever streams it.
   * @param {Entry} entry
   */
  cancel(entry) {
    return this.live.cancel(entry);
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
    for (const gone of reply.deleted ?? []) this.messages.drop(gone);
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
