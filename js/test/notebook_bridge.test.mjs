// Code → cell, the widget's half: the event it sends the JupyterLab extension, the cell
// buttons when an extension answers, Copy and one note when none does, and code blocks
// holding characters that show nothing are never offered for cells.

import assert from "node:assert/strict";
import { test } from "node:test";
import { makeDom } from "../testing/jsdom_env.mjs";

const dom = makeDom("<!doctype html><body></body>", { url: "https://lab.example/lab" });
globalThis.document = dom.window.document;
globalThis.window = dom.window;
globalThis.AbortController = dom.window.AbortController; // jsdom accepts only its own signals
const { MessageExtras } = await import("../src/extras.js");
const { markdownToHtml } = await import("../src/markdown.js");
const { createSanitizer } = await import("../src/sanitize.js");
const { askNotebook, blockText, invisibleCharacters, NO_EXTENSION, DETACHED, NOTEBOOK_EVENT } =
  await import("../src/notebook_bridge.js");

const sanitize = createSanitizer(/** @type {any} */ (dom.window));
const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

/** A stand-in for the JupyterLab extension: claims every event and records it. */
function fakeExtension(answer = () => ({ ok: true })) {
  const seen = [];
  const listener = (event) => {
    event.preventDefault();
    seen.push({ action: event.detail.action, code: event.detail.code, target: event.target });
    event.detail.respond({ ...answer(event.detail), version: "0.1.0" });
  };
  document.addEventListener(NOTEBOOK_EVENT, listener);
  return { seen, remove: () => document.removeEventListener(NOTEBOOK_EVENT, listener) };
}

/** A rendered message as the panel draws it, its markdown through the real sanitizer. */
function article(id, role, markdown, status = "complete") {
  const el = document.createElement("article");
  el.dataset.r3nbRole = "message";
  el.dataset.messageId = id;
  el.dataset.role = role;
  el.dataset.status = status;
  const content = document.createElement("div");
  content.className = "r3nb-content";
  content.append(sanitize(markdownToHtml(markdown)));
  el.append(content);
  return el;
}

function panelList() {
  const list = document.createElement("div");
  document.body.append(list);
  const controller = new AbortController();
  const messages = new Map();
  new MessageExtras(list, {
    message: (id) => messages.get(id) ?? null,
    messages: () => messages.values(),
    loadedImages: () => new Set(),
    onRetry: () => {},
    onStop: () => {},
    signal: controller.signal,
  });
  const add = (id, role, markdown, status = "complete") => {
    messages.set(id, { id, role, author: "alice", status, error: null, content: markdown });
    const el = article(id, role, markdown, status);
    list.append(el);
    return el;
  };
  return { list, add, dispose: () => { controller.abort(); list.remove(); } };
}

const TWO_BLOCKS = "One:\n\n```python\nx = 1\n```\n\nTwo:\n\n```python\ny = 2\n```\n";

test("nothing claims the event: no extension; an element out of the page: detached", async () => {
  const el = document.createElement("div");
  assert.deepEqual(await askNotebook(el, "probe"), { ok: false, reason: DETACHED, version: "" });
  document.body.append(el);
  assert.deepEqual(await askNotebook(el, "probe"), { ok: false, reason: NO_EXTENSION, version: "" });
  el.remove();
});

test("the event bubbles from the panel's element with the action and the code", async () => {
  const ext = fakeExtension((d) => (d.action === "replace-active" ? { ok: false, reason: "click the cell to replace first" } : { ok: true }));
  const el = document.createElement("div");
  document.body.append(el);
  assert.deepEqual(await askNotebook(el, "insert-below", "print(1)\n"), { ok: true, reason: "", version: "0.1.0" });
  assert.deepEqual(await askNotebook(el, "replace-active", "x"), { ok: false, reason: "click the cell to replace first", version: "0.1.0" });
  assert.deepEqual(ext.seen.map((s) => [s.action, s.code, s.target === el]), [["insert-below", "print(1)\n", true], ["replace-active", "x", true]]);
  ext.remove();
  el.remove();
});

test("an extension that claims the event but never answers times out", async () => {
  const listener = (event) => event.preventDefault();
  document.addEventListener(NOTEBOOK_EVENT, listener);
  const el = document.body.appendChild(document.createElement("div"));
  const reply = await askNotebook(el, "insert-below", "x", 20);
  assert.equal(reply.ok, false);
  assert.match(reply.reason, /did not answer/);
  document.removeEventListener(NOTEBOOK_EVENT, listener);
  el.remove();
});

test("invisible characters are found; tabs, newlines, emoji and HTML-looking text are not", () => {
  assert.deepEqual(invisibleCharacters("a\u200Bb\u202Ec\u{E0041}\uFEFF\u00AD\u2066"), ["U+200B", "U+202E", "U+E0041", "U+FEFF", "U+00AD", "U+2066"]);
  assert.deepEqual(invisibleCharacters("x = '\u200B'\ny = '\u200B'"), ["U+200B"]);
  assert.deepEqual(invisibleCharacters("\tif x:\r\n\t\tpass\n"), []);
  assert.deepEqual(invisibleCharacters("print('<b>hi</b> &amp; <script>x</script>')"), []);
  assert.deepEqual(invisibleCharacters("print('👨‍👩‍👧 ❤️ 👍🏽')"), []);
  assert.deepEqual(invisibleCharacters("a\uFE0Fb\u0007\u2028"), ["U+FE0F", "U+0007", "U+2028"]);
});

test("without an extension: Copy stays, no cell buttons, and one note for the whole panel", async () => {
  const panel = panelList();
  panel.add("a1", "assistant", TWO_BLOCKS);
  panel.add("a2", "assistant", "Three:\n\n```\nz = 3\n```\n");
  await tick();
  await tick();
  assert.equal(panel.list.querySelectorAll(".r3nb-code").length, 3);
  assert.equal(panel.list.querySelectorAll(".r3nb-copy").length, 3);
  assert.equal(panel.list.querySelectorAll(".r3nb-cell-action").length, 0);
  const notes = panel.list.querySelectorAll(".r3nb-cells-note");
  assert.equal(notes.length, 1);
  assert.match(notes[0].textContent, /needs r3nb's JupyterLab extension/);
  assert.equal(notes[0].getAttribute("role"), "note");
  assert.equal(panel.list.dataset.cellActions, "off");
  panel.dispose();
});

test("with an extension: each reply's block gets the three buttons; a click sends exactly the text shown", async () => {
  const ext = fakeExtension();
  const panel = panelList();
  panel.add("u1", "user", "Mine:\n\n```python\nnot_mine = 1\n```\n");
  const reply = panel.add("a1", "assistant", "```python\nprint('<b>bold?</b> &lt;no&gt;')\n```\n\n```\nsecond = 2\n```\n");
  await tick();
  await tick();
  assert.equal(panel.list.dataset.cellActions, "on");
  assert.equal(panel.list.querySelector('[data-message-id="u1"] .r3nb-cell-actions'), null, "a person's own message has none");
  const bars = reply.querySelectorAll(".r3nb-cell-actions");
  assert.equal(bars.length, 2);
  assert.equal(panel.list.querySelector(".r3nb-cells-note"), null);
  const buttons = [...bars[0].querySelectorAll("button")];
  assert.deepEqual(buttons.map((b) => [b.textContent, b.dataset.action]), [
    ["Insert below", "insert-below"], ["Replace cell", "replace-active"], ["Insert & run", "insert-and-run"],
  ]);
  for (const b of buttons) {
    assert.equal(b.type, "button");
    assert.ok(b.getAttribute("aria-label").length > 10);
  }
  assert.equal(bars[0].getAttribute("role"), "group");

  buttons[2].click();
  await tick();
  const block = bars[0].parentElement;
  const sent = ext.seen.at(-1);
  assert.equal(sent.action, "insert-and-run");
  assert.equal(sent.code, "print('<b>bold?</b> &lt;no&gt;')"); // the fence's last newline is not shown
  assert.equal(sent.code, blockText(block));
  assert.equal(sent.code, block.querySelector("pre").textContent);
  assert.equal(bars[0].querySelector(".r3nb-cell-status").textContent, "Inserted, running");
  assert.deepEqual(ext.seen.map((s) => s.action), ["probe", "insert-and-run"], "nothing but the probe ran before the click");
  ext.remove();
  panel.dispose();
});

test("a block with characters that show nothing is not offered for cells, and says which", async () => {
  const ext = fakeExtension();
  const panel = panelList();
  const reply = panel.add("a1", "assistant", "```python\nimport os\u200B\nos.remove('x')\u202E\n```\n\n```python\nclean = True\n```\n");
  await tick();
  await tick();
  const [hidden, clean] = reply.querySelectorAll(".r3nb-cell-actions");
  assert.ok([...hidden.querySelectorAll("button")].every((b) => b.disabled));
  assert.equal(hidden.dataset.refused, "invisible");
  assert.match(hidden.querySelector(".r3nb-cell-status").textContent, /show nothing \(U\+200B, U\+202E\)/);
  assert.ok([...clean.querySelectorAll("button")].every((b) => !b.disabled));
  hidden.querySelector("button").click(); // disabled: nothing happens
  await tick();
  assert.deepEqual(ext.seen.map((s) => s.action), ["probe"]);
  ext.remove();
  panel.dispose();
});

test("a block still streaming is checked when clicked, and when its reply ends", async () => {
  const ext = fakeExtension();
  const panel = panelList();
  const reply = panel.add("a1", "assistant", "```python\nx = '\u200B'\n```\n", "streaming");
  await tick();
  await tick();
  const bar = reply.querySelector(".r3nb-cell-actions");
  assert.ok(bar && !bar.dataset.refused);
  bar.querySelector("button").click();
  await tick();
  assert.equal(bar.dataset.refused, "invisible");
  assert.deepEqual(ext.seen.map((s) => s.action), ["probe"]);

  const ending = panel.add("a2", "assistant", "```python\ny = '\u2060'\n```\n", "streaming");
  await tick();
  const endingBar = ending.querySelector(".r3nb-cell-actions");
  assert.ok(endingBar && !endingBar.dataset.refused);
  ending.dataset.status = "complete";
  await tick();
  assert.equal(endingBar.dataset.refused, "invisible");
  assert.match(endingBar.textContent, /U\+2060/);
  ext.remove();
  panel.dispose();
});

test("a refusal from the notebook is shown on the block", async () => {
  const ext = fakeExtension((d) => (d.action === "probe" ? { ok: true } : { ok: false, reason: "the notebook is read-only" }));
  const panel = panelList();
  const reply = panel.add("a1", "assistant", "```\nx = 1\n```\n");
  await tick();
  await tick();
  const bar = reply.querySelector(".r3nb-cell-actions");
  bar.querySelector('[data-action="replace-active"]').click();
  await tick();
  assert.equal(bar.querySelector(".r3nb-cell-status").textContent, "The notebook is read-only");
  assert.equal(bar.dataset.result, "refused");
  ext.remove();
  panel.dispose();
});
