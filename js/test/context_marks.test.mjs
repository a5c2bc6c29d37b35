// Pin / Exclude toggles and the "left out to fit the context window" note, drawn beside the
// messages a session renders; what a click asks for is reported to the host.

import assert from "node:assert/strict";
import { test } from "node:test";
import { makeDom } from "../testing/jsdom_env.mjs";

const dom = makeDom("<!doctype html><body></body>", { url: "https://lab.example/lab" });
globalThis.document = dom.window.document;
globalThis.window = dom.window;
globalThis.AbortController = dom.window.AbortController; // jsdom accepts only its own signals
const { ContextMarks, leftOutText } = await import("../src/context_marks.js");
const { MessageView } = await import("../src/message_view.js");

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));
const base = { conversation_id: "c1", author: "alice", source: "user", streaming_for: null, error: null, prompt_tokens: null, completion_tokens: null, cost: null, attachments: [], created_at: 0, updated_at: 0, revision: 1, parent_id: null };

function setup() {
  const list = document.createElement("div");
  document.body.append(list);
  const messages = new Map();
  const views = new Map();
  const marks = [];
  const over = new Set();
  const controller = new AbortController();
  new ContextMarks(list, {
    message: (id) => messages.get(id) ?? null,
    overBudget: (id) => over.has(id),
    onMark: (id, mark) => marks.push([id, mark]),
    signal: controller.signal,
  });
  const show = (msg) => {
    messages.set(msg.id, msg);
    let view = views.get(msg.id);
    if (!view) {
      view = new MessageView(document, { sanitize: (html) => document.createRange().createContextualFragment(html), onRender: () => {} }, msg.role);
      views.set(msg.id, view);
      list.append(view.el);
    }
    view.update(msg, "");
    return view.el;
  };
  return { list, show, marks, over, controller };
}

test("Pin and Exclude are toggle buttons that report the mark asked for", async () => {
  const { show, marks, controller } = setup();
  const el = show({ ...base, id: "u1", seq: 1, role: "user", content: "hi", status: "complete", model: null, context: null });
  await tick();
  const pin = el.querySelector(".r3nb-context .r3nb-pin");
  const exclude = el.querySelector(".r3nb-context .r3nb-exclude");
  assert.equal(pin.tagName, "BUTTON");
  assert.equal(pin.getAttribute("aria-pressed"), "false");
  assert.equal(exclude.getAttribute("aria-pressed"), "false");
  assert.match(pin.getAttribute("aria-label"), /always send/);
  pin.click();
  exclude.click();
  assert.deepEqual(marks, [["u1", "pinned"], ["u1", "excluded"]]);

  // The server's answer redraws it: pressed, and a second click clears the mark.
  show({ ...base, id: "u1", seq: 1, role: "user", content: "hi", status: "complete", model: null, context: "pinned", revision: 2 });
  await tick();
  const pinned = el.querySelector(".r3nb-pin");
  assert.equal(pinned.getAttribute("aria-pressed"), "true");
  assert.equal(el.dataset.context, "pinned");
  pinned.click();
  assert.deepEqual(marks.at(-1), ["u1", null]);
  controller.abort();
});

test("an excluded message is dimmed and says it is not sent", async () => {
  const { show, controller } = setup();
  const el = show({ ...base, id: "a1", seq: 2, role: "assistant", content: "secret", status: "complete", model: "gpt", context: "excluded" });
  await tick();
  assert.equal(el.dataset.context, "excluded");
  assert.equal(el.querySelector(".r3nb-excluded-note").textContent, "not sent to the model");
  assert.equal(el.querySelector(".r3nb-exclude").getAttribute("aria-pressed"), "true");
  assert.equal(el.querySelector(".r3nb-exclude").textContent, "Excluded");
  controller.abort();
});

test("a reply says how many older messages were left out, and when pinned ones overflowed", async () => {
  const { show, over, controller } = setup();
  over.add("a2");
  const el = show({ ...base, id: "a2", seq: 4, role: "assistant", content: "ok", status: "complete", model: "gpt-4o", context: null, context_left_out: 3 });
  await tick();
  assert.equal(el.querySelector(".r3nb-left-out").textContent, "3 older messages were left out to fit gpt-4o's context window");
  assert.equal(el.querySelector(".r3nb-left-out").getAttribute("role"), "note");
  assert.match(el.querySelector(".r3nb-over-budget").textContent, /pinned messages alone exceed/);
  assert.equal(leftOutText(1, null), "1 older message was left out to fit the model's context window");
  const streaming = show({ ...base, id: "a3", seq: 6, role: "assistant", content: "", status: "streaming", model: "gpt-4o", context: null, context_left_out: 0 });
  await tick();
  assert.equal(streaming.querySelector(".r3nb-left-out"), null, "nothing left out: no note");
  assert.equal(streaming.querySelector(".r3nb-pin"), null, "a reply being written is marked once it ends");
  controller.abort();
});
