// Markdown → HTML string (not yet safe: every caller passes it through sanitize.js).
//
// Raw HTML in a reply is shown as text, not interpreted: models write "<div>" in prose far
// more often than they mean markup, and it keeps the sanitizer a second line of defence
// instead of the only one.

import { Marked } from "marked";
import hljs from "highlight.js/lib/core";
import bash from "highlight.js/lib/languages/bash";
import diff from "highlight.js/lib/languages/diff";
import javascript from "highlight.js/lib/languages/javascript";
import json from "highlight.js/lib/languages/json";
import markdown from "highlight.js/lib/languages/markdown";
import plaintext from "highlight.js/lib/languages/plaintext";
import python from "highlight.js/lib/languages/python";
import r from "highlight.js/lib/languages/r";
import shell from "highlight.js/lib/languages/shell";
import sql from "highlight.js/lib/languages/sql";
import xml from "highlight.js/lib/languages/xml";
import yaml from "highlight.js/lib/languages/yaml";
import { mathExtension } from "./math.js";

// A handful of languages keeps the bundle small; the full set would add over 1 MB.
// Aliases (py, js, sh, html, yml, ...) come with each definition.
const LANGUAGES = { bash, diff, javascript, json, markdown, plaintext, python, r, shell, sql, xml, yaml };
for (const [name, definition] of Object.entries(LANGUAGES)) hljs.registerLanguage(name, definition);
// TypeScript reads well enough with the JavaScript grammar, for 8 KB less.
hljs.registerAliases(["typescript", "ts", "tsx"], { languageName: "javascript" });

const ESCAPES = /** @type {Record<string, string>} */ ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" });

/** @param {string} text */
export function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

/**
 * Whether a fenced block's raw text ends with its closing fence. While a reply streams, the
 * last block is often still open: highlighting it would be wasted work redone every frame.
 * @param {string} raw
 */
function fenceIsClosed(raw) {
  const open = /^ {0,3}(`{3,}|~{3,})/.exec(raw);
  if (!open) return true; // indented code block
  const lines = raw.replace(/\n+$/, "").split("\n");
  if (lines.length < 2) return false;
  const last = lines[lines.length - 1].trim();
  return last.length >= open[1].length && last === open[1][0].repeat(last.length);
}

/**
 * @param {string} text
 * @param {string} lang
 * @param {boolean} closed
 */
function renderCode(text, lang, closed) {
  return `<pre>${highlightCode(text, lang, closed)}</pre>\n`;
}

/**
 * A `<code>` element's HTML for a block of code, highlighted when its language is known
 * and it is small enough to highlight in a few milliseconds.
 * @param {string} text
 * @param {string} lang   the fence's info string's first word
 * @param {boolean} [closed]  false while the block is still streaming (not worth highlighting)
 * @returns {string}  HTML that must still be sanitized
 */
export function highlightCode(text, lang, closed = true) {
  const language = /^[\w+#.-]+$/.test(lang) ? lang.toLowerCase() : "";
  let body = escapeHtml(text);
  if (language && closed && text.length <= HIGHLIGHT_CHARS && hljs.getLanguage(language)) {
    body = hljs.highlight(text, { language, ignoreIllegals: true }).value;
  }
  const cls = language ? `hljs language-${language}` : "hljs";
  return `<code class="${cls}">${body}</code>`;
}

/** Longer code is shown unhighlighted: highlight.js takes ~2 ms per KB. */
export const HIGHLIGHT_CHARS = 20_000;

/**
 * Containers (quotes, list items) nested deeper than this are shown as text: marked lexes
 * them recursively, so a few thousand `>` overflow the stack and a few hundred nested list
 * items take seconds.
 */
export const MAX_DEPTH = 20;
/** One container marker at the start of a line: a quote, or a list item's bullet/number. */
const CONTAINER = /^[ \t]{0,3}(?:>|(?:[-*+]|\d{1,9}[.)])(?=[ \t]|$))[ \t]?/;
const FENCE_LINE = /^ {0,3}(`{3,}|~{3,})/;

/**
 * `text` with every container marker past MAX_DEPTH on a line escaped, so that marked reads
 * it as text: each line is nested at most MAX_DEPTH deep (list indentation counting one
 * level per two columns). Lines of top-level fenced code are left alone; text that nests
 * no deeper is returned unchanged.
 * @param {string} text
 */
export function limitNesting(text) {
  if (!text.includes(">") && !/\n[ \t]{40}/.test(text) && !/(?:(?:[-*+>]|\d{1,9}[.)])[ \t]+){20}/.test(text)) return text; // fast path
  /** @type {string | null} */
  let fence = null;
  let changed = false;
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (fence !== null) {
      const closing = line.trim();
      if (closing.length >= fence.length && closing === fence[0].repeat(closing.length)) fence = null;
      continue;
    }
    const open = FENCE_LINE.exec(line);
    if (open) {
      fence = open[1];
      continue;
    }
    const indent = /^[ \t]*/.exec(line)?.[0] ?? "";
    let depth = Math.floor(indent.replace(/\t/g, "    ").length / 2);
    let pos = indent.length;
    for (let m = CONTAINER.exec(line.slice(pos)); m; m = CONTAINER.exec(line.slice(pos))) {
      if (depth >= MAX_DEPTH) {
        const marker = pos + m[0].search(/[^ \t]/);
        lines[i] = `${line.slice(0, marker)}\\${line.slice(marker)}`;
        changed = true;
        break;
      }
      depth += 1;
      pos += m[0].length;
    }
  }
  return changed ? lines.join("\n") : text;
}

const marked = new Marked({ gfm: true, breaks: false, async: false });
marked.use({
  renderer: {
    code({ text, lang, raw }) {
      return renderCode(text, (lang || "").split(/\s/)[0], fenceIsClosed(raw));
    },
    html(token) {
      const text = escapeHtml(token.text.replace(/\n+$/, ""));
      return "block" in token && token.block ? `<p>${text.replace(/\n/g, "<br>")}</p>\n` : text;
    },
    // Task lists as characters: no <input> elements in replies.
    checkbox({ checked }) {
      return checked ? "☑ " : "☐ ";
    },
  },
});
// `$…$`, `$$…$$`, `\(…\)`, `\[…\]` as placeholders, typeset after sanitizing (math.js).
marked.use(mathExtension(escapeHtml));

/**
 * @param {string} text  markdown
 * @returns {string}     HTML that must still be sanitized
 */
export function markdownToHtml(text) {
  return /** @type {string} */ (marked.parse(limitNesting(text), { async: false }));
}

/**
 * The block tokens of `text` (what `markdownToHtml` renders in one go), for callers that
 * render a long text in several steps: `tokensToHtml` of consecutive groups of these tokens,
 * joined, is exactly `markdownToHtml(text)`.
 * @param {string} text
 * @returns {import("marked").Token[]}
 */
export function markdownTokens(text) {
  return marked.lexer(limitNesting(text));
}

/**
 * @param {import("marked").Token[]} tokens  block tokens from `markdownTokens`
 * @returns {string}  HTML that must still be sanitized
 */
export function tokensToHtml(tokens) {
  return /** @type {string} */ (marked.parser(tokens));
}
