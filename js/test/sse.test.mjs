import assert from "node:assert/strict";
import { test } from "node:test";

import { codePointLength, codePointSlice } from "../src/protocol.js";
import { SseParser } from "../src/sse.js";

/** Feeds `text` cut into pieces of `size` bytes (splitting UTF-8 sequences too). */
function parse(text, size) {
  const events = [];
  const parser = new SseParser((name, data) => events.push([name, data]));
  const bytes = new TextEncoder().encode(text);
  for (let i = 0; i < bytes.length; i += size) parser.feed(bytes.subarray(i, i + size));
  parser.close();
  return events;
}

const STREAM =
  ': ping\n\n' +
  'event: start\ndata: {"assistant_message": {"id": "a"}, "user_message": null}\n\n' +
  'event: delta\r\ndata: {"message_id": "a", "offset": 0, "text": "h\\u00e9llo 😀"}\r\n\r\n' +
  ': ping\r\r' +
  'event: delta\rdata: {"message_id": "a", "offset": 7, "text": "!"}\r\r' +
  'data: line one\ndata: line two\n\n' +
  'event: done\ndata: {"message": {"id": "a", "status": "complete"}}\n\n' +
  'event: delta\ndata: {"unterminated": true}';

const EXPECTED = [
  ["start", { assistant_message: { id: "a" }, user_message: null }],
  ["delta", { message_id: "a", offset: 0, text: "héllo 😀" }],
  ["delta", { message_id: "a", offset: 7, text: "!" }],
  ["message", "line one\nline two"],
  ["done", { message: { id: "a", status: "complete" } }],
];

for (const size of [1, 2, 3, 5, 7, 64, 100000]) {
  test(`SSE parser gives the same events for chunks of ${size} bytes`, () => {
    assert.deepEqual(parse(STREAM, size), EXPECTED);
  });
}

test("code point helpers match Python's len() and slicing", () => {
  assert.equal(codePointLength(""), 0);
  assert.equal(codePointLength("héllo 😀"), 7); // "😀" is 2 UTF-16 units, 1 code point
  assert.equal(codePointLength("😀😀a"), 3);
  assert.equal(codePointSlice("a😀b😀c", 2), "b😀c");
  assert.equal(codePointSlice("a😀b", 0), "a😀b");
  assert.equal(codePointSlice("a😀b", 3), "");
  assert.equal(codePointSlice("a😀b", 9), "");
});
