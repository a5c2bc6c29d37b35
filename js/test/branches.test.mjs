// Branches in the panel: the session shows only the current branch (a snapshot's `branch`
// drops the rest, or reloads when it names messages held nowhere), Regenerate and Edit start
// a new version that replaces what followed, and the per-message bar draws the right actions
// and the "‹ n/m ›" switcher, by keyboard-reachable buttons.

import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { makeDom } from "../testing/jsdom_env.mjs";

const dom = makeDom("<!doctype html><body></body>", { pretendToBeVisual: true });
const win = /** @type {any} */ (dom.window);
globalThis.document = win.document;
globalThis.window = win;
globalThis.AbortController = win.AbortController; // jsdom accepts only its own signals
const { createSanitizer } = await import("../src/sanitize.js");
const { Session } = await import("../src/session.js");
const { BranchActions, versionLabel } = await import("../src/branches.js");
const sanitize = createSanitizer(win);

function message(over) {
  return {
    id: "a1", conversation_id: "c1", seq: 2, role: "assistant", content: "answer", status: "complete",
    model: "demo", author: "alice", source: "user", streaming_for: null, error: null,
    prompt_tokens: null, completion_tokens: null, cost: null, attachments: [], created_at: 1, updated_at: 1,
    revision: 2, parent_id: "u1", ...over,
  };
}
const U1 = message({ id: "u1", seq: 1, role: "user", content: "first?", parent_id: null, revision: 1 });
const A1 = message({ id: "a1", seq: 2, revision: 2 });
const U2 = message({ id: "u2", seq: 3, role: "user", content: "second?", parent_id: "a1", revision: 3 });
const A2 = message({ id: "a2", seq: 4, content: "old reply", parent_id: "u2", revision: 4 });
const CONVERSATION = { id: "c1", title: "t", author: "alice", created_at: 1, updated_at: 1, revision: 5, message_count: 4, model: null, head_id: "a2" };

function fakeTransport() {
  const calls = [];
  const replies = [];
  const streams = [];
  return {
    calls, replies, streams, kind: "direct", close() {},
    async request(method, path, body) {
      calls.push({ method, path, body });
      const next = replies.shift();
      if (!next) throw new Error(`no reply queued for ${method} ${path}`);
      return { status: 200, body: next, retryAfter: null };
    },
    async stream(method, path, body, onEvent) {
      calls.push({ method, path, body });
      for (const step of streams.shift() ?? []) onEvent(step[0], step[1]);
    },
  };
}

const cleanups = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
});

function makeSession(transport) {
  const list = win.document.createElement("div");
  win.document.body.append(list);
  const statuses = {};
  const session = new Session("c1", {
    transport, list, sanitize,
    kernelId: () => "k1",
    intervals: () => ({ snapshotMs: 1e7, idleMs: 1e7 }),
    setStatus: (key, text) => { statuses[key] = text; },
    onBusyChange() {}, onReplyDone() {}, onRender() {}, onPoll() {}, onConversation() {}, onGone() {},
    isShown: () => true,
  });
  cleanups.push(() => { session.dispose(); list.remove(); });
  return { session, list, statuses };
}

const shown = (list) => [...list.querySelectorAll("[data-r3nb-role=message]")].map((el) => el.dataset.messageId);
const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

test("a snapshot's branch drops messages that left it, and a branch held nowhere is loaded whole", async () => {
  const t = fakeTransport();
  const { session, list } = makeSession(t);
  t.replies.push({ conversation: CONVERSATION, branch: ["u1", "a1", "u2", "a2"], messages: [U1, A1, U2, A2], revision: 5, streaming: false });
  await session.poll();
  assert.deepEqual(shown(list), ["u1", "a1", "u2", "a2"]);

  // A turn deleted elsewhere: the header changed, the branch no longer has u2/a2.
  t.replies.push({ conversation: { ...CONVERSATION, revision: 6, head_id: "a1" }, branch: ["u1", "a1"], messages: [], revision: 6, streaming: false });
  await session.poll();
  assert.deepEqual(shown(list), ["u1", "a1"]);
  assert.equal(session.revision, 6);

  // Another version chosen elsewhere: the branch names a message held nowhere → reload all.
  const other = message({ id: "u9", seq: 5, role: "user", content: "other", parent_id: "a1", revision: 3 });
  t.replies.push({ conversation: { ...CONVERSATION, revision: 7, head_id: "u9" }, branch: ["u1", "a1", "u9"], messages: [], revision: 7, streaming: false });
  await session.poll();
  assert.equal(session.revision, null, "reload from since=0");
  t.replies.push({ conversation: { ...CONVERSATION, revision: 7 }, branch: ["u1", "a1", "u9"], messages: [U1, A1, other], revision: 7, streaming: false });
  await session.poll();
  assert.equal(t.calls.at(-1).path, "conversations/c1", "the reload asks for everything");
  assert.deepEqual(shown(list), ["u1", "a1", "u9"]);
});

test("regenerate replaces the reply shown; edit replaces the prompt and what followed", async () => {
  const t = fakeTransport();
  const { session, list } = makeSession(t);
  t.replies.push({ conversation: CONVERSATION, branch: ["u1", "a1", "u2", "a2"], messages: [U1, A1, U2, A2], revision: 5, streaming: false });
  await session.poll();

  const regenerated = message({ id: "a3", seq: 5, content: "", status: "streaming", parent_id: "u2", revision: 8, siblings: ["a2", "a3"] });
  t.streams.push([
    ["start", { user_message: null, assistant_message: regenerated }],
    ["delta", { message_id: "a3", offset: 0, text: "new reply" }],
    ["done", { message: { ...regenerated, content: "new reply", status: "complete", revision: 9 } }],
  ]);
  assert.equal(await session.regenerate("a2", ""), true);
  const posted = t.calls.find((c) => c.path.endsWith("/regenerate"));
  assert.equal(posted.path, "conversations/c1/messages/a2/regenerate");
  assert.equal(posted.body.kernel_id, "k1");
  assert.deepEqual(shown(list), ["u1", "a1", "u2", "a3"]);
  assert.equal(session.entries.get("a3").msg.content, "new reply");
  assert.equal(versionLabel(session.entries.get("a3").msg), "2/2");
  assert.equal(list.querySelector('[data-message-id="a3"]').dataset.versions, "2/2");

  const edited = message({ id: "u4", seq: 6, role: "user", content: "second, better?", parent_id: "a1", revision: 10, siblings: ["u2", "u4"] });
  const reply = message({ id: "a4", seq: 7, content: "", status: "streaming", parent_id: "u4", revision: 11 });
  t.streams.push([
    ["start", { user_message: edited, assistant_message: reply }],
    ["done", { message: { ...reply, content: "ok", status: "complete", revision: 12 } }],
  ]);
  assert.equal(await session.send("second, better?", "", "u2"), true);
  assert.equal(t.calls.at(-1).path, "conversations/c1/messages/u2/edit");
  assert.deepEqual(t.calls.at(-1).body.content, "second, better?");
  assert.deepEqual(shown(list), ["u1", "a1", "u4", "a4"]);
});

test("switching version and deleting a turn call the routes, then follow the server", async () => {
  const t = fakeTransport();
  const { session, list, statuses } = makeSession(t);
  t.replies.push({ conversation: CONVERSATION, branch: ["u1", "a1", "u2", "a2"], messages: [U1, A1, U2, A2], revision: 5, streaming: false });
  await session.poll();

  t.replies.push({ conversation: { ...CONVERSATION, head_id: "x" } });
  await session.switchTo("a0");
  assert.deepEqual(t.calls.at(-1), { method: "POST", path: "conversations/c1/head", body: { message_id: "a0" } });
  assert.equal(session.revision, null);

  t.replies.push({ conversation: CONVERSATION, deleted: ["u2", "a2"] });
  await session.deleteTurn("u2");
  assert.equal(t.calls.at(-1).method, "DELETE");
  assert.equal(t.calls.at(-1).path, "conversations/c1/messages/u2");
  assert.deepEqual(shown(list), ["u1", "a1"]);

  t.request = async () => ({ status: 409, body: { error: "a reply is still being written" }, retryAfter: null });
  await session.deleteTurn("u1");
  assert.match(statuses.send, /Delete failed: a reply is still being written/);
  assert.deepEqual(shown(list), ["u1", "a1"]);
});

test("the bar: Edit and Delete turn on prompts, Regenerate on the last reply, ‹ › on versions", async () => {
  const list = win.document.createElement("div");
  win.document.body.append(list);
  const controller = new AbortController();
  cleanups.push(() => { controller.abort(); list.remove(); });
  const messages = new Map();
  const clicks = [];
  const bar = new BranchActions(list, {
    message: (id) => messages.get(id) ?? null,
    onRegenerate: (id) => clicks.push(["regenerate", id]),
    onEdit: (id) => clicks.push(["edit", id]),
    onDelete: (id) => clicks.push(["delete", id]),
    onSwitch: (id) => clicks.push(["switch", id]),
    signal: controller.signal,
  });
  const add = (msg) => {
    messages.set(msg.id, msg);
    const el = win.document.createElement("article");
    el.dataset.r3nbRole = "message";
    el.dataset.messageId = msg.id;
    el.dataset.role = msg.role;
    el.dataset.status = msg.status;
    el.dataset.versions = versionLabel(msg);
    list.append(el);
    return el;
  };
  const u1 = add(U1);
  const a1 = add(A1);
  const u2 = add({ ...U2, siblings: ["u0", "u2", "u3"] });
  const a2 = add({ ...A2, status: "streaming" });
  await tick();
  const buttons = (el) => [...el.querySelectorAll(".r3nb-branch button")].map((b) => b.className.split(" ")[0]);
  assert.deepEqual(buttons(u1), ["r3nb-edit", "r3nb-delete-turn"]);
  assert.deepEqual(buttons(a1), [], "only the last reply regenerates");
  assert.equal(a1.querySelector(".r3nb-branch").hidden, true);
  assert.deepEqual(buttons(a2), [], "not while it is being written");
  assert.equal(u2.querySelector(".r3nb-version-label").textContent, "2/3");
  assert.match(u2.querySelector(".r3nb-version-prev").getAttribute("aria-label"), /Previous version of this prompt \(1 of 3\)/);

  messages.set("a2", { ...A2, status: "complete" });
  a2.dataset.status = "complete";
  await tick();
  assert.deepEqual(buttons(a2), ["r3nb-regenerate"]);
  a2.querySelector(".r3nb-regenerate").click();
  u2.querySelector(".r3nb-version-next").click();
  u2.querySelector(".r3nb-version-prev").click();
  u1.querySelector(".r3nb-edit").click();
  const del = u1.querySelector(".r3nb-delete-turn");
  del.click();
  assert.equal(del.textContent, "Confirm delete", "deleting asks first");
  assert.deepEqual(clicks, [["regenerate", "a2"], ["switch", "u3"], ["switch", "u0"], ["edit", "u1"]]);
  del.click();
  assert.deepEqual(clicks.at(-1), ["delete", "u1"]);

  bar.setBusy(true);
  assert.equal(a2.querySelector(".r3nb-regenerate").disabled, true, "nothing runs while a reply is written");
  assert.equal(u1.querySelector(".r3nb-delete-turn").disabled, true);
  bar.setBusy(false);
  bar.setEditing("u1");
  assert.equal(u1.querySelector(".r3nb-edit").textContent, "Editing…");
});
