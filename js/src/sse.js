// Incremental parser for `text/event-stream` (the WHATWG EventSource format).
//
// Bytes arrive in arbitrary chunks: a line, a multi-byte character or an event can be split
// anywhere, so the parser keeps the unfinished line between calls. Only `event:` and `data:`
// matter to r3nb; `id:`/`retry:` are ignored and lines starting with ":" are comments
// (the server's heartbeats).

/**
 * @callback SseHandler
 * @param {string} event   the event name ("message" when the frame names none)
 * @param {any} data       the parsed JSON of the data lines, or the raw text if not JSON
 * @returns {void}
 */

export class SseParser {
  /** @param {SseHandler} onEvent */
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.decoder = new TextDecoder("utf-8");
    /** Unfinished line carried over from the previous chunk. */
    this.pending = "";
    /** A chunk ended on "\r": a following "\n" belongs to that line ending. */
    this.skipLeadingLf = false;
    this.eventName = "";
    /** @type {string[]} */
    this.dataLines = [];
  }

  /** @param {Uint8Array} bytes */
  feed(bytes) {
    this.feedText(this.decoder.decode(bytes, { stream: true }));
  }

  /** @param {string} text */
  feedText(text) {
    let start = 0;
    if (this.skipLeadingLf && text.startsWith("\n")) start = 1;
    this.skipLeadingLf = false;
    for (let i = start; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      const line = this.pending + text.slice(start, i);
      this.pending = "";
      if (c === 13) {
        if (i + 1 < text.length) {
          if (text.charCodeAt(i + 1) === 10) i++;
        } else {
          this.skipLeadingLf = true;
        }
      }
      start = i + 1;
      this.line(line);
    }
    this.pending += text.slice(start);
  }

  /** End of input: a final event without its blank line is dropped, as EventSource does. */
  close() {
    this.feedText(this.decoder.decode());
    this.pending = "";
    this.eventName = "";
    this.dataLines = [];
  }

  /** @param {string} line */
  line(line) {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.eventName = value;
    else if (field === "data") this.dataLines.push(value);
  }

  dispatch() {
    const name = this.eventName || "message";
    const lines = this.dataLines;
    this.eventName = "";
    this.dataLines = [];
    if (lines.length === 0) return;
    const raw = lines.join("\n");
    let data;
    try {
      data = JSON.parse(raw);
    } catch {
      data = raw;
    }
    this.onEvent(name, data);
  }
}
