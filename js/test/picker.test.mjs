// The conversation picker against a fake paged `GET conversations`: first page, "Load
// more…", a debounced search, and the open conversation kept when it is on no loaded page.

import assert from "node:assert/strict";
import { test } from "node:test";
import { makeDom } from "../testing/jsdom_env.mjs";

const dom = makeDom("<!doctype html><body></body>", { url: "https://lab.example/lab" });
globalThis.document = dom.window.document;
globalThis.AbortController = dom.window.AbortController;
const { ConversationPicker, MORE, listPath } = await import("../src/picker.js");

const all = Array.from({ length: 5 }, (_, i) => ({ id: `c${i}`, title: i === 4 ? "Needle" : `Chat ${i}`, author: null, created_at: 1, updated_at: 100 - i, revision: 1, message_count: 0 }));

/** A transport answering `GET conversations?limit&cursor&q` from `all`, 2 per page. */
function fakeTransport(paths) {
  return {
    kind: "direct",
    async request(method, path) {
      paths.push(path);
      const url = new URL(path, "https://x/");
      const q = (url.searchParams.get("q") || "").toLowerCase();
      const start = Number(url.searchParams.get("cursor") || 0);
      const found = all.filter((c) => c.title.toLowerCase().includes(q));
      const page = found.slice(start, start + 2);
      const next = start + 2 < found.length ? String(start + 2) : null;
      return { status: 200, body: { conversations: page, next_cursor: next }, retryAfter: null };
    },
    stream() { throw new Error("unused"); },
    close() {},
  };
}

const labels = (select) => [...select.options].map((o) => o.textContent);

test("pages, loads more, searches and keeps the open conversation", async () => {
  const paths = [];
  const picked = [];
  const controller = new AbortController();
  const picker = new ConversationPicker(document, { transport: () => fakeTransport(paths), signal: controller.signal, onPick: (cid) => picked.push(cid) });
  assert.equal(listPath({ cursor: "a b", q: "x" }), "conversations?limit=100&cursor=a+b&q=x");

  await picker.reload();
  picker.setCurrent("c4"); // not on the first page
  assert.deepEqual(labels(picker.select), ["Untitled", "Chat 0", "Chat 1", "Load more…"]);
  assert.equal(picker.select.value, "c4");
  picker.note(all[4]); // its snapshot names it
  assert.equal(labels(picker.select)[0], "Needle");

  picker.select.value = MORE;
  picker.select.dispatchEvent(new dom.window.Event("change"));
  assert.equal(picker.select.value, "c4", "Load more… is an action, not a choice");
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.deepEqual(labels(picker.select), ["Needle", "Chat 0", "Chat 1", "Chat 2", "Chat 3", "Load more…"]);
  assert.deepEqual(picked, []);

  picker.search.value = "nee";
  picker.search.dispatchEvent(new dom.window.Event("input"));
  picker.search.value = "need";
  picker.search.dispatchEvent(new dom.window.Event("input"));
  await new Promise((resolve) => setTimeout(resolve, 400));
  assert.deepEqual(paths.filter((p) => p.includes("q=")), ["conversations?limit=100&q=need"], "debounced: one query");
  assert.deepEqual(labels(picker.select), ["Needle"]);

  picker.search.value = "zzz";
  picker.search.dispatchEvent(new dom.window.KeyboardEvent("keydown", { key: "Enter" }));
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.deepEqual(labels(picker.select), ["Needle", "No conversation matches “zzz”"]);

  picker.select.value = "c4";
  picker.search.dispatchEvent(new dom.window.KeyboardEvent("keydown", { key: "Escape" }));
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(picker.search.value, "");
  assert.deepEqual(labels(picker.select), ["Needle", "Chat 0", "Chat 1", "Load more…"]);
  controller.abort();
});

test("a refresh after every page was loaded keeps them all", async () => {
  // The list is refreshed (first page) after replies and conversation changes; once the
  // last page was loaded there is no next cursor, and the refresh dropped every page but
  // the first (seen in CI as 30 conversations vanishing after "Load more…").
  const controller = new AbortController();
  const picker = new ConversationPicker(document, { transport: () => fakeTransport([]), signal: controller.signal, onPick: () => {} });
  await picker.reload();
  picker.setCurrent("c0");
  await picker.loadMore();
  await picker.loadMore();
  const everything = ["Chat 0", "Chat 1", "Chat 2", "Chat 3", "Needle"];
  assert.deepEqual(labels(picker.select), everything);
  await picker.reload();
  assert.deepEqual(labels(picker.select), everything);
  controller.abort();
});
