// The messages one session shows: each message's entry (what text is held, its view), kept
// in the list element in `seq` order, grown by deltas and pruned to the branch shown.
// Who updates a message (a live stream or the polls) is the session's business (session.js).

import { MessageView } from "./message_view.js";
import { FINAL_STATUSES, codePointLength, codePointSlice } from "./protocol.js";

/** @typedef {import("./protocol.js").MessageDict} MessageDict */

/**
 * What a message list needs of the session's host.
 * @typedef {object} ListHost
 * @property {HTMLElement} list                the message list element
 * @property {import("./sanitize.js").Sanitize} sanitize
 * @property {() => string} kernelId
 * @property {() => void} onRender             a message's text was rendered
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
export class GapError extends Error {}

export class MessageList {
  /**
   * @param {ListHost} host
   * @param {(id: string) => string | null} [attachmentUrl]  where an attached image is served
   */
  constructor(host, attachmentUrl = () => null) {
    this.host = host;
    this.attachmentUrl = attachmentUrl;
    /** @type {Map<string, Entry>} */
    this.entries = new Map();
  }

  dispose() {
    for (const entry of this.entries.values()) entry.view.dispose();
    this.entries.clear();
  }

  /**
   * Adds or updates a message from a complete MessageDict.
   * @param {MessageDict} msg     `content` is the full text
   * @param {string} [appended]   the part of `content` that is new, when known
   * @returns {Entry}
   */
  upsert(msg, appended) {
    let entry = this.entries.get(msg.id);
    if (!entry) {
      const view = new MessageView(this.host.list.ownerDocument, { sanitize: this.host.sanitize, onRender: this.host.onRender, attachmentUrl: this.attachmentUrl }, msg.role);
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
}
