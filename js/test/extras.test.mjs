// What the panel adds to rendered messages: actions, "stopped by", code language labels,
// author labels only when several people wrote; and dates on messages not from today.

import assert from "node:assert/strict";
import { test } from "node:test";
import { makeDom } from "../testing/jsdom_env.mjs";

const dom = makeDom("<!doctype html><body></body>", { url: "https://lab.example/lab" });
globalThis.document = dom.window.document;
globalThis.window = dom.window;
globalThis.AbortController = dom.window.AbortController; // jsdom accepts only its own signals
const { MessageExtras, labelCodeBlocks } = await import("../src/extras.js");
const { formatTime } = await import("../src/dom.js");

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

function article(msg) {
  const el = document.createElement("article");
  el.dataset.r3nbRole = "message";
  el.dataset.messageId = msg.id;
  el.dataset.status = msg.status;
  el.innerHTML = `<div class="r3nb-meta"><span class="r3nb-asker">for ${msg.author}</span></div><div class="r3nb-content"></div>`;
  return el;
}

test("actions, who stopped a reply, and author labels follow the messages", async () => {
  const list = document.createElement("div");
  document.body.append(list);
  const messages = new Map();
  const stopped = [];
  const controller = new AbortController();
  new MessageExtras(list, {
    message: (id) => messages.get(id) ?? null,
    messages: () => messages.values(),
    loadedImages: () => new Set(),
    onRetry: () => {},
    onStop: (id) => stopped.push(id),
    signal: controller.signal,
  });
  const ask = { id: "u1", role: "user", author: "alice", status: "complete", error: null, content: "hi" };
  const reply = { id: "a1", role: "assistant", author: "alice", status: "streaming", error: null, content: "**x**" };
  messages.set("u1", ask).set("a1", reply);
  list.append(article(ask), article(reply));
  await tick();
  const a1 = list.querySelector('[data-message-id="a1"]');
  assert.ok(a1.querySelector(".r3nb-extras .r3nb-copy-md"));
  a1.querySelector(".r3nb-stop-reply").click();
  assert.deepEqual(stopped, ["a1"]);
  assert.equal(list.dataset.authors, "one");

  messages.set("a1", { ...reply, status: "cancelled", error: "stopped by bob" });
  a1.dataset.status = "cancelled";
  await tick();
  assert.equal(a1.querySelector(".r3nb-stopped").textContent, "Stopped by bob");
  assert.ok(a1.querySelector(".r3nb-retry"));
  assert.equal(a1.querySelector(".r3nb-stop-reply"), null);

  const other = { id: "u2", role: "user", author: "bob", status: "complete", error: null, content: "me too" };
  messages.set("u2", other);
  list.append(article(other));
  await tick();
  assert.equal(list.dataset.authors, "many");
  controller.abort();
});

test("code blocks get their fence's language, once", () => {
  const root = document.createElement("div");
  root.innerHTML = '<div class="r3nb-code"><button class="r3nb-copy">Copy</button><pre><code class="hljs language-python">x</code></pre></div>'
    + '<div class="r3nb-code"><pre><code class="hljs">plain</code></pre></div>';
  labelCodeBlocks(root);
  labelCodeBlocks(root);
  assert.deepEqual([...root.querySelectorAll(".r3nb-lang")].map((e) => e.textContent), ["python"]);
});

test("times: today's show the time only, older ones the date, other years the year", () => {
  const now = new Date(2030, 5, 15, 12, 0);
  const today = formatTime(new Date(2030, 5, 15, 9, 5).getTime() / 1000, now);
  const lastWeek = formatTime(new Date(2030, 5, 8, 9, 5).getTime() / 1000, now);
  const lastYear = formatTime(new Date(2029, 5, 8, 9, 5).getTime() / 1000, now);
  assert.doesNotMatch(today, /Jun|2030/);
  assert.match(lastWeek, /Jun/);
  assert.doesNotMatch(lastWeek, /2030/);
  assert.match(lastYear, /2029/);
});
