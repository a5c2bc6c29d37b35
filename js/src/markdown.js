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
  const language = /^[\w+#.-]+$/.test(lang) ? lang.toLowerCase() : "";
  let body = escapeHtml(text);
  if (language && closed && hljs.getLanguage(language)) {
    body = hljs.highlight(text, { language, ignoreIllegals: true }).value;
  }
  const cls = language ? `hljs language-${language}` : "hljs";
  return `<pre><code class="${cls}">${body}</code></pre>\n`;
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

/**
 * @param {string} text  markdown
 * @returns {string}     HTML that must still be sanitized
 */
export function markdownToHtml(text) {
  return /** @type {string} */ (marked.parse(text, { async: false }));
}

/**
 * The block tokens of `text` (what `markdownToHtml` renders in one go), for callers that
 * render a long text in several steps: `tokensToHtml` of consecutive groups of these tokens,
 * joined, is exactly `markdownToHtml(text)`.
 * @param {string} text
 * @returns {import("marked").Token[]}
 */
export function markdownTokens(text) {
  return marked.lexer(text);
}

/**
 * @param {import("marked").Token[]} tokens  block tokens from `markdownTokens`
 * @returns {string}  HTML that must still be sanitized
 */
export function tokensToHtml(tokens) {
  return /** @type {string} */ (marked.parser(tokens));
}
