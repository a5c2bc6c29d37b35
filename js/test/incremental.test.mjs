// The streaming renderer: stable blocks are rendered once and kept, the final DOM equals a
// full render, and the work stays linear for a long reply.

import assert from "node:assert/strict";
import { test } from "node:test";
import { makeDom } from "../testing/jsdom_env.mjs";

import { MarkdownView } from "../src/incremental.js";
import { markdownToHtml } from "../src/markdown.js";
import { createSanitizer } from "../src/sanitize.js";

const dom = makeDom("<!doctype html><body></body>", { pretendToBeVisual: true });
const win = /** @type {any} */ (dom.window);
const sanitize = createSanitizer(win);

function makeView() {
  const container = win.document.createElement("div");
  let renders = 0;
  const view = new MarkdownView(container, { sanitize, onRender: () => { renders++; } });
  return { view, container, renders: () => renders };
}

/** Runs one animation frame's work now (no waiting for the real rAF). */
function frame(view) {
  view.cancel();
  view.notBefore = 0;
  view.onFrame();
}

const REPLY =
  "# Title\n\nSome *text*.\n\n- a\n- b\n\n  continued item\n\n```python\nx = 1\n\ny = 2\n```\n\nAfter the code.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nEnd.";

test("streamed text renders like the full text, blocks appended only", () => {
  const { view, container } = makeView();
  const committed = [];
  for (let i = 0; i < REPLY.length; i += 3) {
    view.append(REPLY.slice(i, i + 3));
    frame(view);
    committed.push(view.stableEnd);
    // Never cut inside the open fence: the code block with a blank line stays whole.
    const head = REPLY.slice(0, view.stableEnd);
    assert.equal((head.match(/```/g) || []).length % 2, 0, `cut inside a fence at ${view.stableEnd}`);
  }
  assert.deepEqual(committed, [...committed].sort((a, b) => a - b), "stable end only grows");
  assert.ok(view.blocks.children.length > 3, "several stable blocks were committed");
  const streamedText = container.textContent;
  view.finish(REPLY);
  const full = win.document.createElement("div");
  full.append(sanitize(markdownToHtml(REPLY)));
  assert.equal(view.blocks.innerHTML, full.innerHTML);
  assert.equal(streamedText.replace(/\s+/g, " ").trim(), full.textContent.replace(/\s+/g, " ").trim());
});

test("a list continuation after a blank line is not cut from its item", () => {
  const { view } = makeView();
  view.append("- item\n\n  more of the item\n\nNext paragraph\n");
  frame(view);
  assert.equal(view.text.slice(0, view.stableEnd), "- item\n\n  more of the item\n\n");
});

test("a 20,000-token reply renders in linear work", () => {
  const { view } = makeView();
  let text = "";
  let renderedChars = 0;
  let largest = 0;
  let frames = 0;
  const original = view.render.bind(view);
  view.render = (md) => {
    renderedChars += md.length;
    largest = Math.max(largest, md.length);
    return original(md);
  };
  for (let token = 1; token <= 20000; token++) {
    const delta = token % 80 === 0 ? "word.\n\n" : "word "; // a paragraph every 80 tokens
    text += delta;
    view.append(delta);
    if (token % 20 === 0) {
      frame(view); // jsdom's DOM is ~50x slower than a browser's: fewer frames keep the test quick
      frames++;
    }
  }
  view.finish(text);
  const paragraph = 80 * 5 + 2;
  // Each frame renders at most the unfinished paragraph; the stable blocks once; the end once.
  assert.ok(largest <= text.length, "the final full render is the only large one");
  assert.ok(renderedChars <= frames * paragraph + 2 * text.length, `rendered ${renderedChars} chars, ${frames} frames, ${text.length} text`);
  // Re-rendering everything each frame would have cost frames * text.length / 2.
  assert.ok(renderedChars < (frames * text.length) / 2 / 50);
});

/** The generated benchmark reply: a newline every 12 words, never a blank line. */
const WORDS = ["Hello", "café", "stream", "✓", "token", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "naïve", "résumé", "*alpha*", "beta", "`gamma`", "delta", "panel", "notebook", "kernel", "cell", "output", "done"];
const word = (i) => WORDS[i % WORDS.length] + (i % 12 === 11 ? "\n" : " ");

function fullRender(text) {
  const el = win.document.createElement("div");
  el.append(sanitize(markdownToHtml(text)));
  return el.innerHTML;
}

/** Frames until the exact rendering is built; returns how many it took. */
function settle(view) {
  let frames = 0;
  while (!view.settled) {
    frame(view);
    assert.ok(++frames < 1000, "the final rendering never settled");
  }
  return frames;
}

/**
 * Streams `tokens` words through a view, a frame every `every` words; returns the largest
 * text rendered at once (markdown or plain) and the total.
 */
function stream(view, tokens, every, wordAt = word) {
  const rendered = [];
  const original = view.options.sanitize;
  view.options.sanitize = (html, options) => {
    rendered.push(html.length);
    return original(html, options);
  };
  let text = "";
  for (let i = 0; i < tokens; i++) {
    const delta = wordAt(i);
    text += delta;
    view.append(delta);
    if (i % every === every - 1) frame(view);
  }
  return { text, rendered };
}

test("one long paragraph: bounded work per frame, the final DOM equals a full render", () => {
  const { view } = makeView();
  const { text, rendered } = stream(view, 5000, 20);
  assert.ok(text.length > 25_000);
  assert.ok(view.soft.children.length > 10, "the paragraph was cut into soft segments");
  const streamedMax = Math.max(...rendered);
  assert.ok(streamedMax < 3 * 2000 + 500, `a frame rendered ${streamedMax} chars of HTML`);
  const before = rendered.length;
  view.finish(text);
  const frames = settle(view);
  assert.ok(frames > 1, "the final rendering was built over several frames");
  const finalMax = Math.max(...rendered.slice(before));
  assert.ok(finalMax < 2 * 3000 + 1000, `a final piece sanitized ${finalMax} chars of HTML`);
  assert.equal(view.soft.children.length, 0);
  assert.equal(view.tail.children.length, 0);
  assert.equal(view.blocks.innerHTML, fullRender(text));
  // Linear: everything rendered (streaming + final) is a small multiple of the reply.
  const total = rendered.reduce((a, b) => a + b, 0);
  assert.ok(total < 12 * text.length, `rendered ${total} chars of HTML for ${text.length} chars`);
});

test("a reply without a single newline is cut at spaces and still renders exactly", () => {
  const { view } = makeView();
  const { text, rendered } = stream(view, 3000, 25, (i) => WORDS[i % WORDS.length] + " ");
  assert.ok(!text.includes("\n"));
  assert.ok(Math.max(...rendered) < 3 * 2000 + 500);
  view.finish(text);
  settle(view);
  assert.equal(view.blocks.innerHTML, fullRender(text));
});

test("paragraphs after a long one, and a long code block, end exactly like a full render", () => {
  const { view } = makeView();
  let i = 0;
  const parts = [];
  for (let k = 0; k < 2000; k++) parts.push(word(i++));
  parts.push("\n\n- item one\n\n- item two\n\n```python\n");
  for (let k = 0; k < 400; k++) parts.push(`x_${k} = ${k}  # a line of code\n\n`);
  parts.push("```\n\nAfter the code, a [link](https://example.com).\n\n");
  for (let k = 0; k < 1000; k++) parts.push(word(i++));
  const deltas = parts.join("").match(/[\s\S]{1,7}/g);
  let text = "";
  deltas.forEach((d, n) => {
    text += d;
    view.append(d);
    if (n % 30 === 0) frame(view);
  });
  const head = text.slice(0, view.stableEnd);
  assert.equal((head.match(/```/g) || []).length % 2, 0, "never committed inside the fence");
  view.finish(text);
  settle(view);
  assert.equal(view.blocks.innerHTML, fullRender(text));
});

test("finish renders only what follows the committed blocks", () => {
  const { view } = makeView();
  let text = "";
  for (let p = 0; p < 60; p++) {
    const para = `Paragraph ${p} with *some* words.\n\n`;
    text += para;
    view.append(para);
    frame(view);
  }
  text += "The last words.";
  view.append("The last words.");
  frame(view);
  const rendered = [];
  view.render = (md) => {
    rendered.push(md);
    return sanitize(markdownToHtml(md));
  };
  view.finish(text);
  assert.ok(view.settled);
  assert.deepEqual(rendered, ["The last words."]);
  assert.equal(view.blocks.innerHTML, fullRender(text));
});

test("loose lists and link definitions still end exactly like a full render", () => {
  for (const reply of ["- a\n\n- b\n\nText after.\n\n1. one\n\n2. two\n", "See [the docs][d].\n\nMore.\n\n[d]: https://example.com\n"]) {
    const { view } = makeView();
    for (const ch of reply) {
      view.append(ch);
      frame(view);
    }
    view.finish(reply);
    settle(view);
    assert.equal(view.blocks.innerHTML, fullRender(reply), reply);
  }
});

test("a long reply loaded complete is built over several frames", () => {
  const { view } = makeView();
  let text = "";
  for (let i = 0; i < 6000; i++) text += word(i);
  view.finish(text);
  assert.ok(!view.settled, "not rendered in one task");
  assert.ok(view.soft.textContent.length > 0, "shown as plain text meanwhile");
  settle(view);
  assert.equal(view.blocks.innerHTML, fullRender(text));
});
