// The session's sync rules against a scripted transport: deltas appended by code point
// offset, gaps resynced from what is held, observers polling with `from`, the panel's own
// kernel followed live, and a stalled stream handed over to polling.

import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { makeDom } from "../testing/jsdom_env.mjs";

import { createSanitizer } from "../src/sanitize.js";
import { Session } from "../src/session.js";
import { ApiError, NetworkError, StallError } from "../src/transport.js";

const dom = makeDom("<!doctype html><body></body>", { pretendToBeVisual: true });
const win = /** @type {any} */ (dom.window);
const sanitize = createSanitizer(win);

const KERNEL = "k-mine";

function message(over) {
  return {
    id: "m1", conversation_id: "c1", seq: 2, role: "assistant", content: "", status: "streaming",
    model: "demo", author: "alice", source: "user", streaming_for: KERNEL, error: null,
    prompt_tokens: null, completion_tokens: null, cost: null, attachments: [], created_at: 1, updated_at: 1,
    revision: 5, ...over,
  };
}
const USER = message({ id: "u1", seq: 1, role: "user", content: "hi", status: "complete", streaming_for: null });
const CONVERSATION = { id: "c1", title: "t", author: "alice", created_at: 1, updated_at: 1, revision: 1, message_count: 0 };

/** A transport whose replies are queued per path prefix; records every call. */
function fakeTransport() {
  const calls = [];
  const replies = [];
  const streams = [];
  return {
    calls, replies, streams, kind: "direct", close() {},
    async request(method, path, _body) {
      calls.push(`${method} ${path}`);
      const next = replies.shift();
      if (!next) throw new Error(`no reply queued for ${method} ${path}`);
      return { status: 200, body: next, retryAfter: null };
    },
    async stream(method, path, body, onEvent) {
      calls.push(`${method} ${path}`);
      const script = streams.shift();
      if (!script) throw new Error(`no stream queued for ${method} ${path}`);
      for (const step of script) {
        if (step instanceof Error) throw step;
        onEvent(step[0], step[1]);
      }
    },
  };
}

const sessions = [];
afterEach(() => {
  for (const session of sessions.splice(0)) session.dispose(); // no timer may outlive a test
});

function makeSession(transport) {
  const list = win.document.createElement("div");
  const statuses = {};
  const done = [];
  const session = new Session("c1", {
    transport, list, sanitize,
    kernelId: () => KERNEL,
    intervals: () => ({ snapshotMs: 1e7, idleMs: 1e7 }), // polls only when the test calls them
    setStatus: (key, text) => { statuses[key] = text; },
    onBusyChange() {}, onReplyDone() { done.push(1); }, onRender() {}, onPoll() {}, onConversation() {}, onGone() {},
    isShown: () => true,
  });
  sessions.push(session);
  return { session, list, statuses, done };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

test("send appends deltas by code point, skips overlap and resyncs a gap", async () => {
  const t = fakeTransport();
  const { session, list, done } = makeSession(t);
  t.streams.push([
    ["start", { user_message: USER, assistant_message: message({}) }],
    ["delta", { message_id: "m1", offset: 0, text: "😀ab" }],
    ["delta", { message_id: "m1", offset: 1, text: "abc" }], // overlaps "ab": only "c" is new
    ["delta", { message_id: "m1", offset: 9, text: "zz" }], // a gap: resync from 4
  ]);
  t.streams.push([
    ["start", { user_message: null, assistant_message: message({}) }],
    ["delta", { message_id: "m1", offset: 4, text: "d" }],
    ["done", { message: message({ content: "😀abcd", status: "complete", prompt_tokens: 3, completion_tokens: 5, cost: 0.0012 }) }],
  ]);
  t.replies.push({ conversation: CONVERSATION, messages: [], revision: 9, streaming: false });
  const accepted = await session.send("hi", "demo");
  assert.equal(accepted, true);
  assert.equal(t.calls[0], "POST conversations/c1/messages");
  assert.equal(t.calls[1], "GET messages/m1/stream?offset=4");
  const entry = session.entries.get("m1");
  assert.equal(entry.msg.content, "😀abcd");
  assert.equal(entry.length, 5);
  const el = list.querySelector('[data-message-id="m1"]');
  assert.equal(el.dataset.status, "complete");
  assert.equal(el.querySelector(".r3nb-content").textContent.trim(), "😀abcd");
  assert.equal(el.querySelector(".r3nb-usage").textContent, "3 → 5 tokens · $0.0012");
  assert.equal(session.busy(), false);
  assert.equal(done.length, 1, "the host heard the reply end once (it refreshes usage)");
  session.dispose();
});

test("an observer polls with since and from, and appends only the new text", async () => {
  const t = fakeTransport();
  const { session, list } = makeSession(t);
  const other = message({ streaming_for: "k-other", content: "Hel" });
  t.replies.push({ conversation: CONVERSATION, messages: [USER, other], revision: 7, streaming: true });
  await session.start();
  assert.equal(t.calls[0], "GET conversations/c1");
  assert.ok(list.querySelector(".r3nb-responding"), "another kernel's stream shows 'AI is responding…'");
  t.replies.push({ conversation: CONVERSATION, messages: [{ ...other, content: "lo", offset: 3, revision: 8 }], revision: 8, streaming: true });
  await session.poll();
  assert.equal(t.calls[1], "GET conversations/c1?since=7&from=m1:3");
  assert.equal(session.entries.get("m1").msg.content, "Hello");
  t.replies.push({ conversation: CONVERSATION, messages: [{ ...other, content: "", offset: 5, status: "error", error: "provider timeout", revision: 9 }], revision: 9, streaming: false });
  await session.poll();
  const el = list.querySelector('[data-message-id="m1"]');
  assert.equal(el.dataset.status, "error");
  assert.match(el.querySelector(".r3nb-error").textContent, /provider timeout/);
  assert.ok(el.querySelector("button.r3nb-retry"));
  session.dispose();
});

test("the panel's own kernel is followed live from the text held; a stall hands over to polling", async () => {
  const t = fakeTransport();
  const { session } = makeSession(t);
  t.replies.push({ conversation: CONVERSATION, messages: [USER, message({ content: "ab", revision: 6 })], revision: 10, streaming: true });
  t.streams.push([["delta", { message_id: "m1", offset: 2, text: "c" }], new StallError()]);
  t.replies.push({ conversation: CONVERSATION, messages: [message({ content: "de", offset: 3, revision: 11 })], revision: 11, streaming: true });
  await session.start();
  const entry = session.entries.get("m1");
  await settle(); // the stall, then the immediate poll it schedules
  await settle();
  assert.equal(t.calls[1], "GET messages/m1/stream?offset=2");
  assert.equal(entry.live, false, "the stalled stream gave the message back to polling");
  // From the message's own revision: snapshots skipped it while the stream owned it.
  assert.equal(t.calls[2], "GET conversations/c1?since=6&from=m1:3");
  assert.equal(entry.msg.content, "abcde");
  session.dispose();
});

// --- the watch stream (GET conversations/{cid}/watch) ----------------------------------

/**
 * A transport that offers the watch: each stream plays its script (events, or an Error to
 * throw), then stays open until the session aborts it, as a real watch stream does.
 */
function watchingTransport() {
  const t = fakeTransport();
  t.canWatch = true;
  t.stream = async (method, path, _body, onEvent, signal) => {
    t.calls.push(`${method} ${path}`);
    const script = t.streams.shift();
    if (!script) throw new Error(`no stream queued for ${method} ${path}`);
    for (const step of script) {
      if (step instanceof Error) throw step;
      onEvent(step[0], step[1]);
    }
    await new Promise((_resolve, reject) => {
      const abort = () => reject(new win.DOMException("aborted", "AbortError"));
      if (signal.aborted) abort();
      signal.addEventListener("abort", abort);
    });
  };
  return t;
}

test("after its first snapshot an observer is pushed over the watch stream: snapshots and deltas", async () => {
  const t = watchingTransport();
  const { session } = makeSession(t);
  const other = message({ streaming_for: "k-other", content: "Hel" });
  t.replies.push({ conversation: CONVERSATION, messages: [USER, other], revision: 7, streaming: true });
  t.streams.push([
    ["delta", { message_id: "m1", offset: 3, text: "lo" }],
    ["delta", { message_id: "m1", offset: 5, text: " wor" }],
    ["snapshot", { conversation: null, branch: null, messages: [{ ...other, content: "ld", offset: 9, status: "complete", revision: 9 }], revision: 9, streaming: false }],
  ]);
  await session.start();
  await settle();
  assert.deepEqual(t.calls, ["GET conversations/c1", "GET conversations/c1/watch?since=7&from=m1:3"]);
  assert.equal(session.entries.get("m1").msg.content, "Hello world");
  assert.equal(session.entries.get("m1").msg.status, "complete");
  assert.equal(session.revision, 9);
  // A poll asked for meanwhile (a Send ended, a branch switched) ends the watch, polls, watches again.
  t.replies.push({ conversation: null, branch: null, messages: [], revision: 9, streaming: false });
  t.streams.push([]);
  session.schedulePoll(0);
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.deepEqual(t.calls.slice(2), ["GET conversations/c1?since=9", "GET conversations/c1/watch?since=9"]);
});

test("a server without the watch route (404) is polled instead, for the rest of the session", async () => {
  const t = watchingTransport();
  const { session } = makeSession(t);
  t.replies.push({ conversation: CONVERSATION, messages: [USER], revision: 7, streaming: false });
  t.streams.push([new ApiError(404, "no r3nb API route 'conversations/c1/watch'", null)]);
  t.replies.push({ conversation: null, branch: null, messages: [], revision: 7, streaming: false });
  await session.start();
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.deepEqual(t.calls, ["GET conversations/c1", "GET conversations/c1/watch?since=7", "GET conversations/c1?since=7"]);
  assert.equal(session.watchUnavailable, true);
  assert.ok(session.pollTimer !== undefined, "the next poll is scheduled");
  await session.poll().catch(() => {}); // no reply queued: what matters is the path asked
  assert.equal(t.calls.length, 4);
  assert.equal(t.calls[3], "GET conversations/c1?since=7", "no second watch attempt");
});

test("a watch delta that skips text reloads the conversation whole, then watches again", async () => {
  const t = watchingTransport();
  const { session } = makeSession(t);
  const other = message({ streaming_for: "k-other", content: "Hel" });
  t.replies.push({ conversation: CONVERSATION, messages: [USER, other], revision: 7, streaming: true });
  t.streams.push([["delta", { message_id: "m1", offset: 10, text: "??" }]]);
  t.replies.push({ conversation: CONVERSATION, branch: ["u1", "m1"], messages: [USER, { ...other, content: "Hello there" }], revision: 8, streaming: true });
  t.streams.push([]);
  await session.start();
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.deepEqual(t.calls.slice(1), ["GET conversations/c1/watch?since=7&from=m1:3", "GET conversations/c1", "GET conversations/c1/watch?since=8&from=m1:11"]);
  assert.equal(session.entries.get("m1").msg.content, "Hello there");
});

test("a watch stream that breaks hands over to a poll, which opens the next watch", async () => {
  const t = watchingTransport();
  const { session } = makeSession(t);
  t.replies.push({ conversation: CONVERSATION, messages: [USER], revision: 7, streaming: false });
  t.streams.push([new NetworkError("connection reset")]);
  await session.start();
  await settle();
  assert.equal(session.watchBreaks, 1);
  assert.ok(session.pollTimer !== undefined, "a poll is scheduled (after the snapshot interval)");
  t.replies.push({ conversation: null, branch: null, messages: [], revision: 8, streaming: false });
  t.streams.push([]);
  await session.poll();
  assert.deepEqual(t.calls, ["GET conversations/c1", "GET conversations/c1/watch?since=7", "GET conversations/c1?since=7", "GET conversations/c1/watch?since=8"]);
});
