// The streaming renderer: stable blocks are rendered once and kept, the final DOM equals a
// full render, and the work stays linear for a long reply.

import assert from "node:assert/strict";
import { test } from "node:test";
import { JSDOM } from "jsdom";

import { MarkdownView } from "../src/incremental.js";
import { markdownToHtml } from "../src/markdown.js";
import { createSanitizer } from "../src/sanitize.js";

const dom = new JSDOM("<!doctype html><body></body>", { pretendToBeVisual: true });
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
