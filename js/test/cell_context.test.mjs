// Cells and errors → chat: a cell from the extension becomes bounded attachments, ANSI
// colour codes stripped from its traceback, the failing end of a long traceback kept;
// "Ask r3nb" fills the input only when it is empty and never sends.

import assert from "node:assert/strict";
import { test } from "node:test";
import { makeDom } from "../testing/jsdom_env.mjs";

const dom = makeDom("<!doctype html><body></body>", { url: "https://lab.example/lab" });
globalThis.document = dom.window.document;
globalThis.window = dom.window;
globalThis.AbortController = dom.window.AbortController;
const { cellAttachment, errorAttachments, stripAnsi, MAX_CODE, MAX_TRACEBACK } = await import("../src/cell_context.js");

const failed = {
  index: 4,
  cell_type: "code",
  source: "1 / zero",
  execution_count: 7,
  outputs: [
    { output_type: "stream", name: "stdout", text: ["about to fail\n"] },
    { output_type: "error", ename: "NameError", evalue: "name 'zero' is not defined",
      traceback: ["\u001b[0;31m---------\u001b[0m", "\u001b[0;31mNameError\u001b[0m: name 'zero' is not defined"] },
  ],
};

test("ANSI colour codes go, text stays", () => {
  assert.equal(stripAnsi("\u001b[0;31mNameError\u001b[0m: x \u001b]8;;http://a\u0007link\u001b]8;;\u0007"), "NameError: x link");
});

test("Attach cell: code, text output and error in one chip named by its run", () => {
  const a = cellAttachment(failed);
  assert.equal(a.kind, "cell");
  assert.equal(a.name, "cell [7]");
  assert.match(a.summary, /```python\n1 \/ zero\n```/);
  assert.match(a.summary, /about to fail/);
  assert.match(a.summary, /NameError: name 'zero' is not defined/);
  assert.ok(!a.summary.includes("\u001b"), "no escape character left");
});

test("Ask r3nb: the code and the error as two chips, a long traceback keeps its end", () => {
  const long = { ...failed, source: "x".repeat(5000), outputs: [{ ...failed.outputs[1], traceback: ["frame\n".repeat(2000), "ValueError: the end"] }] };
  const [code, error] = errorAttachments(long);
  assert.equal(code.name, "cell [7]");
  assert.ok(code.summary.length < MAX_CODE + 200);
  assert.equal(error.kind, "error");
  assert.equal(error.name, "NameError");
  assert.ok(error.summary.length < MAX_TRACEBACK + 200);
  assert.match(error.summary, /ValueError: the end\n```$/);
  assert.match(error.summary, /characters left out/);
});

const { cellImages, imageUpload, base64Size } = await import("../src/cell_context.js");
const { MAX_IMAGE_BYTES } = await import("../src/protocol.js");

test("a cell's PNG and JPEG outputs become image chips named after the cell; text and SVG stay out", () => {
  const plotted = {
    index: 2, cell_type: "code", source: "plt.plot(x)", execution_count: 3,
    outputs: [
      { output_type: "display_data", data: { "text/plain": "<Figure>", "image/png": "iVBORw0K\nGgo=\n" } },
      { output_type: "display_data", data: { "image/svg+xml": "<svg/>" } },
      { output_type: "execute_result", data: { "image/jpeg": ["/9j/", "4AAQ"] } },
    ],
  };
  assert.deepEqual(cellImages(plotted), [
    { kind: "image", name: "plot 1 of cell [3]", mime: "image/png", data: "iVBORw0KGgo=" },
    { kind: "image", name: "plot 2 of cell [3]", mime: "image/jpeg", data: "/9j/4AAQ" },
  ]);
  assert.deepEqual(cellImages(failed), []);
});

test("an image over the cap or of another type is refused with a reason, before any upload", () => {
  assert.equal(base64Size("iVBORw0KGgo="), 8);
  const atCap = "A".repeat(Math.ceil(MAX_IMAGE_BYTES / 3) * 4 + 4);
  assert.match(String(imageUpload("big.png", "image/png", atCap)), /at most 5 MB per image/);
  assert.match(String(imageUpload("x.svg", "image/svg+xml", "PHN2Zy8+")), /only PNG, JPEG, GIF and WebP/);
  assert.equal(typeof imageUpload("ok.gif", "image/gif", "R0lGODlh"), "object");
});
