// Replies that are hard to render: nesting deeper than marked's recursion allows, blocks
// too large to lex in one task, a render that throws. Each stays within its own message,
// shows its text, and never reaches the session's connection state. And what a person
// typed is shown as typed.

import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { makeDom } from "../testing/jsdom_env.mjs";

import { LARGE_CHARS, MarkdownView, TABLE_SLICE_CHARS, blockRanges } from "../src/incremental.js";
import { MAX_DEPTH, markdownToHtml } from "../src/markdown.js";
import { MessageView } from "../src/message_view.js";
import { createSanitizer } from "../src/sanitize.js";
import { Session } from "../src/session.js";

const dom = makeDom("<!doctype html><body></body>", { pretendToBeVisual: true });
const win = /** @type {any} */ (dom.window);
const sanitize = createSanitizer(win);

/** ~8 KB of nested quotes: marked's recursive lexer overflowed the stack on it. */
const DEEP_QUOTE = "Deep quote:\n\n" + ">".repeat(7000) + " bottom of the quote\n\nAfter the quote.\n";
/** Emphasis nested too deep for marked's inline lexer: still a RangeError after the bound. */
const DEEP_EMPHASIS = "*".repeat(3000) + "deep" + "*".repeat(3000);

/** Records the size of every piece of HTML sanitized (the unit of work of one step). */
function makeView() {
  const container = win.document.createElement("div");
  const sizes = [];
  const view = new MarkdownView(container, {
    sanitize: (html, options) => {
      sizes.push(html.length);
      return sanitize(html, options);
    },
    onRender() {},
  });
  return { view, container, sizes };
}

function frame(view) {
  view.cancel();
  view.notBefore = 0;
  view.onFrame();
}

function settle(view) {
  let frames = 0;
  while (!view.settled) {
    frame(view);
    assert.ok(++frames < 5000, "the final rendering never settled");
  }
  return frames;
}

test("deeply nested quotes and lists render as text past the depth bound", () => {
  const list = Array.from({ length: 300 }, (_, i) => `${"  ".repeat(i)}- item ${i}`).join("\n");
  for (const text of [DEEP_QUOTE, "> ".repeat(4000) + "bottom", "1. ".repeat(3000) + "bottom", "> - ".repeat(2000) + "bottom", list]) {
    const html = markdownToHtml(text); // threw RangeError (or took seconds for the list)
    const depth = (html.match(/<(?:blockquote|ul|ol)>/g) || []).length;
    assert.ok(depth <= MAX_DEPTH + 1 || text === list, `${depth} nested containers`);
    const el = win.document.createElement("div");
    el.append(sanitize(html));
    assert.match(el.textContent, /bottom|item 299/);
  }
});

test("a deep quote shows its text streamed, loaded complete, and in the same view after", () => {
  const streamed = makeView();
  for (const chunk of DEEP_QUOTE.match(/[\s\S]{1,50}/g)) {
    streamed.view.append(chunk);
    frame(streamed.view);
  }
  streamed.view.finish(DEEP_QUOTE);
  settle(streamed.view);
  const loaded = makeView();
  loaded.view.finish(DEEP_QUOTE);
  settle(loaded.view);
  for (const { container } of [streamed, loaded]) {
    assert.match(container.textContent, /bottom of the quote/);
    assert.match(container.textContent, /After the quote\./);
    assert.equal(container.querySelectorAll("blockquote").length, MAX_DEPTH);
  }
});

test("a render that throws shows that text as plain text, whitespace kept", () => {
  // Complete and short (rendered at once), complete and long (built over frames), streaming.
  for (const [complete, filler] of [[true, ""], [true, "More words. ".repeat(500)], [false, ""]]) {
    const { view, container } = makeView();
    const text = `Before.\n\n${DEEP_EMPHASIS}\n\n    indented   text\n\n${filler}`;
    if (complete) {
      view.finish(text);
      settle(view);
    } else {
      view.append(text);
      frame(view); // the unfinished tail is rendered on each frame
    }
    assert.match(container.textContent, /deep/);
    const plain = container.querySelector(".r3nb-plain");
    assert.ok(plain, "the text that failed is shown plain");
    assert.match(plain.textContent, /\n {4}indented {3}text/);
  }
});

test("a message whose renderer throws falls back to plain text in its own view", () => {
  const throwing = () => {
    throw new RangeError("Maximum call stack size exceeded");
  };
  const view = new MessageView(win.document, { sanitize: throwing, onRender() {} }, "assistant");
  view.setText("# Title\n\nSome *text*.", true);
  const content = view.el.querySelector(".r3nb-content");
  assert.equal(content.textContent, "# Title\n\nSome *text*.");
  view.setText("# Title\n\nSome *text*. More.", true); // later versions still show
  assert.equal(content.textContent, "# Title\n\nSome *text*. More.");
});

const sessions = [];
afterEach(() => {
  for (const session of sessions.splice(0)) session.dispose();
});

function snapshotMessage(over) {
  return {
    conversation_id: "c1", role: "assistant", status: "complete", model: "demo", author: "alice",
    source: "user", streaming_for: null, error: null, prompt_tokens: null, completion_tokens: null,
    cost: null, attachments: [], created_at: 1, updated_at: 1, revision: 5, ...over,
  };
}

test("a message that cannot be rendered never takes the others or the connection state", async () => {
  const replies = [];
  const transport = {
    kind: "direct", close() {},
    async request() {
      return { status: 200, body: replies.shift(), retryAfter: null };
    },
    async stream() {
      throw new Error("no stream in this test");
    },
  };
  const list = win.document.createElement("div");
  const statuses = {};
  const session = new Session("c1", {
    transport, list, sanitize,
    kernelId: () => "k1",
    intervals: () => ({ snapshotMs: 1e7, idleMs: 1e7 }),
    setStatus: (key, text) => { statuses[key] = text; },
    onBusyChange() {}, onRender() {}, onPoll() {}, onConversation() {}, onGone() {},
    isShown: () => true,
  });
  sessions.push(session);
  const messages = [
    snapshotMessage({ id: "u1", seq: 1, role: "user", content: "go deep" }),
    snapshotMessage({ id: "a1", seq: 2, content: DEEP_EMPHASIS }),
    snapshotMessage({ id: "a3", seq: 2.5, content: DEEP_QUOTE }),
    snapshotMessage({ id: "u2", seq: 3, role: "user", content: "and then?" }),
    snapshotMessage({ id: "a2", seq: 4, content: "All *fine*." }),
  ];
  replies.push({ conversation: null, messages, revision: 9, streaming: false });
  await session.start();
  assert.equal(statuses.poll ?? "", "", "no 'Cannot reach the server' for a rendering problem");
  assert.equal(session.revision, 9);
  const shown = Array.from(list.querySelectorAll("[data-message-id]"), (el) => el.dataset.messageId);
  assert.deepEqual(shown, ["u1", "a1", "a3", "u2", "a2"]);
  assert.match(list.querySelector('[data-message-id="a1"] .r3nb-content').textContent, /deep/);
  assert.match(list.querySelector('[data-message-id="a3"] .r3nb-content').textContent, /bottom of the quote/);
  assert.equal(list.querySelector('[data-message-id="a2"] em').textContent, "fine");
});

test("a user message is shown as typed: whitespace kept, no markdown", () => {
  const typed =
    "class Box:\n    def __init__(self):\n        pass\n\n# comment\n__init__ and *stars*\n\n```python\nx = 1  # set\n```\n";
  const view = new MessageView(win.document, { sanitize, onRender() {} }, "user");
  view.setText(typed, true);
  const content = view.el.querySelector(".r3nb-content");
  assert.equal(content.textContent, typed);
  assert.equal(content.querySelectorAll("h1, strong, em, p, pre").length, 0);
  assert.ok(content.querySelector(".r3nb-plain"), "shown pre-wrap");
  // Fenced code is highlighted in place, its fences still shown.
  assert.ok(content.querySelector("code.language-python .hljs-comment"));
});

/** A GFM table of about `size` characters. */
function table(size) {
  const lines = ["| id | name | value | note |", "|---:|------|------:|------|"];
  let length = 0;
  for (let i = 0; length < size; i++) {
    lines.push(`| ${i} | name *${i}* | ${i * 3.5} | some \`note\` text for row ${i} |`);
    length += lines[lines.length - 1].length + 1;
  }
  return { text: `${lines.join("\n")}\n`, rows: lines.length - 2 };
}

test("a large table is rendered in slices into parts of one table, every row in order", () => {
  const { text, rows } = table(100_000); // the browser test renders 244 KB; jsdom is slow

  const reply = `The data:\n\n${text}\nThat is all.\n`;
  const ranges = blockRanges(reply, 3000);
  assert.ok(ranges.some((r) => r.large && r.end - r.start > 90_000), "the table is one large block");
  const { view, container, sizes } = makeView();
  view.finish(reply);
  const frames = settle(view);
  assert.ok(frames > 20, `built over ${frames} frames`);
  // No step sanitized (nor lexed) more than a slice: the whole table's HTML is ~200 KB.
  const largest = Math.max(...sizes.slice(1)); // [0]: none (the provisional text is not HTML)
  assert.ok(largest < 2 * LARGE_CHARS, `a step sanitized ${largest} chars of HTML`);
  assert.ok(largest < 4 * TABLE_SLICE_CHARS, `a table step sanitized ${largest} chars of HTML`);
  // One table in parts (each a table of its own, laid out only near the viewport) that
  // share one scroller, the column widths and the header (shown once, at the top).
  assert.equal(container.querySelectorAll(".r3nb-table").length, 1);
  const parts = container.querySelectorAll(".r3nb-table > .r3nb-table-part");
  assert.ok(parts.length > 5, `${parts.length} parts`);
  assert.equal(container.querySelectorAll("table").length, parts.length);
  assert.equal(container.querySelectorAll("thead").length, 1);
  assert.equal(parts[0].querySelector("thead th").textContent, "id");
  const widths = Array.from(parts, (part) => Array.from(part.querySelectorAll("col"), (col) => col.style.width).join());
  assert.ok(widths[0].split(",").length === 4 && widths.every((w) => w === widths[0]), "the same column widths");
  const ids = Array.from(container.querySelectorAll("tbody tr"), (tr) => tr.firstElementChild.textContent);
  assert.deepEqual(ids, Array.from({ length: rows }, (_, i) => String(i)), "every row, in order");
  assert.equal(container.querySelectorAll("tbody tr:first-child td:nth-child(2) em").length, parts.length);
  assert.match(container.textContent, /That is all\./);
});

test("a huge paragraph and a huge code block are rendered in slices, text intact", () => {
  const paragraph = Array.from({ length: 6000 }, (_, i) => `word${i} *em*`).join(" ");
  const code = "```python\n" + Array.from({ length: 1500 }, (_, i) => `def f${i}(x):\n    return x * ${i}`).join("\n") + "\n```\n";
  for (const [text, expected] of [[paragraph, "word5999"], [code, "return x * 1499"]]) {
    assert.ok(text.length > 2 * LARGE_CHARS);
    const { view, container, sizes } = makeView();
    view.finish(text);
    settle(view);
    assert.ok(Math.max(...sizes) < 2 * LARGE_CHARS, `a step sanitized ${Math.max(...sizes)} chars of HTML`);
    assert.equal(container.querySelectorAll("p, pre").length, 1, "still one paragraph / one code block");
    assert.ok(container.textContent.includes(expected));
  }
});

test("a long text shown as it is while its rendering is built comes in parts, text intact", () => {
  const { text } = table(60_000);
  const { view, container } = makeView();
  view.finish(text); // rendered over the next frames; shown as plain text meanwhile
  const plain = container.querySelector(".r3nb-soft .r3nb-plain");
  assert.ok(plain, "a plain preview");
  const parts = plain.querySelectorAll(":scope > .r3nb-plain-part");
  assert.ok(parts.length > 5, `${parts.length} parts`);
  assert.equal(plain.textContent, text);
  settle(view);
  assert.equal(container.querySelector(".r3nb-soft").children.length, 0);
});
