// Turns untrusted HTML (from markdown.js) into a DOM fragment that is safe to insert.
//
// The widget runs with JupyterLab's origin: a script that slips through could run code in
// every kernel of that person. So: an allow-list through DOMPurify on every render, then a
// second pass for what DOMPurify does not decide for us (link targets, images, classes).

import DOMPurify from "dompurify";
import { createTypesetter } from "./math.js";

/** Elements a reply may contain; everything else is dropped (its text kept when harmless). */
const ALLOWED_TAGS = [
  "a", "b", "blockquote", "br", "code", "del", "div", "em", "h1", "h2", "h3", "h4", "h5", "h6",
  "hr", "i", "img", "kbd", "li", "ol", "p", "pre", "s", "span", "strong", "sub", "sup",
  "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
];
/** Named again so that widening ALLOWED_TAGS by mistake cannot let these in. */
const FORBID_TAGS = [
  "script", "style", "iframe", "frame", "frameset", "object", "embed", "form", "input", "button",
  "textarea", "select", "svg", "math", "link", "meta", "base", "template", "noscript", "video",
  "audio", "source", "picture",
];
const ALLOWED_ATTR = ["href", "title", "alt", "src", "class", "start", "align"];
/** Relative URLs and these schemes only; DOMPurify strips whitespace/control chars first. */
const ALLOWED_URI_REGEXP = /^(?:(?:https?|mailto):|[^a-z]|[a-z+.-]+(?:[^a-z+.\-:]|$))/i;
/** Classes our own renderer emits (highlight.js spans, code languages, math placeholders). */
const SAFE_CLASS = /^(?:hljs(?:-[a-z0-9-]+)?|language-[\w+#.-]+|[a-z]+_+|r3nb-math(?:-display)?)$/;

const CONFIG = {
  ALLOWED_TAGS,
  FORBID_TAGS,
  ALLOWED_ATTR,
  FORBID_ATTR: ["style"],
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
  ALLOWED_URI_REGEXP,
  KEEP_CONTENT: true,
  RETURN_DOM_FRAGMENT: /** @type {const} */ (true),
};

/**
 * The scheme of a URL after removing what browsers ignore in it, or "" when relative.
 * @param {string} url
 */
function schemeOf(url) {
  // eslint-disable-next-line no-control-regex
  const cleaned = url.replace(/[\u0000-\u0020\u007f-\u009f]/g, "");
  const match = /^([a-z][a-z0-9+.-]*):/i.exec(cleaned);
  return match ? match[1].toLowerCase() : "";
}

/** @param {string} href */
export function isSafeHref(href) {
  const scheme = schemeOf(href);
  return scheme === "" || scheme === "http" || scheme === "https" || scheme === "mailto";
}

/**
 * An absolute http(s) URL an image may be loaded from (on a click), or null.
 * @param {string} src
 * @returns {URL | null}
 */
export function imageUrl(src) {
  const scheme = schemeOf(src);
  if (scheme !== "http" && scheme !== "https") return null;
  try {
    const url = new URL(src.trim());
    return url.protocol === "http:" || url.protocol === "https:" ? url : null;
  } catch {
    return null;
  }
}

/**
 * @typedef {object} SanitizeOptions
 * @property {Set<string>} [loadedImages]  image URLs the person already chose to load
 */

/**
 * @callback Sanitize
 * @param {string} html
 * @param {SanitizeOptions} [options]
 * @returns {DocumentFragment}
 */

/**
 * @param {Window & typeof globalThis} win  the window whose document receives the fragments
 * @param {{ mathBudgetMs?: number }} [options]  KaTeX time per task (see math.js)
 * @returns {Sanitize}
 */
export function createSanitizer(win, { mathBudgetMs } = {}) {
  const purify = DOMPurify(win);
  const typeset = createTypesetter(win, { budgetMs: mathBudgetMs });
  return (html, options = {}) => {
    const fragment = purify.sanitize(html, CONFIG);
    secure(fragment, win.document, options.loadedImages ?? new Set());
    // Math placeholders become MathML only now, after every check above: the reply's own
    // <math> and <svg> were stripped, and typesetting goes through its own allow-list.
    typeset(fragment);
    decorate(fragment, win.document);
    return fragment;
  };
}

/**
 * @param {DocumentFragment} fragment
 * @param {Document} doc
 * @param {Set<string>} loadedImages
 */
function secure(fragment, doc, loadedImages) {
  for (const el of Array.from(fragment.querySelectorAll("*"))) {
    for (const attr of Array.from(el.attributes)) {
      const name = attr.name.toLowerCase();
      if (name.startsWith("on") || name === "style" || !ALLOWED_ATTR.includes(name)) el.removeAttribute(attr.name);
    }
    const cls = el.getAttribute("class");
    if (cls !== null) {
      const kept = cls.split(/\s+/).filter((c) => SAFE_CLASS.test(c));
      if (kept.length) el.setAttribute("class", kept.join(" "));
      else el.removeAttribute("class");
    }
  }
  for (const a of Array.from(fragment.querySelectorAll("a"))) {
    const href = a.getAttribute("href");
    if (href !== null && !isSafeHref(href)) a.removeAttribute("href");
    a.setAttribute("target", "_blank");
    a.setAttribute("rel", "noopener noreferrer");
  }
  for (const img of Array.from(fragment.querySelectorAll("img"))) {
    img.replaceWith(imagePlaceholder(doc, img.getAttribute("src") || "", img.getAttribute("alt") || "", loadedImages));
  }
}

/**
 * External images are never fetched on their own: a URL can carry data out. The person gets
 * a button naming the host instead.
 * @param {Document} doc
 * @param {string} src
 * @param {string} alt
 * @param {Set<string>} loadedImages
 * @returns {Element}
 */
function imagePlaceholder(doc, src, alt, loadedImages) {
  const url = imageUrl(src);
  if (!url) {
    const span = doc.createElement("span");
    span.className = "r3nb-img-blocked";
    span.textContent = `[image${alt ? `: ${alt}` : ""}]`;
    return span;
  }
  if (loadedImages.has(url.href)) return makeImage(doc, url, alt);
  const button = doc.createElement("button");
  button.type = "button";
  button.className = "r3nb-img-load";
  button.dataset.src = url.href;
  button.dataset.alt = alt;
  button.textContent = `Load image from ${url.host}`;
  button.title = alt ? `${alt} — ${url.href}` : url.href;
  return button;
}

/**
 * @param {Document} doc
 * @param {URL} url
 * @param {string} alt
 */
function makeImage(doc, url, alt) {
  const img = doc.createElement("img");
  img.className = "r3nb-img";
  img.setAttribute("referrerpolicy", "no-referrer"); // the image host learns nothing of the page
  img.alt = alt;
  img.loading = "lazy";
  img.src = url.href;
  return img;
}

/**
 * Replaces a placeholder made above by its image (the person clicked it).
 * @param {HTMLElement} button
 * @param {Set<string>} loadedImages  remembers the choice across re-renders of the message
 */
export function loadImage(button, loadedImages) {
  const url = imageUrl(button.dataset.src || "");
  if (!url) return;
  loadedImages.add(url.href);
  button.replaceWith(makeImage(button.ownerDocument, url, button.dataset.alt || ""));
}

/**
 * Copy buttons on code blocks and scroll wrappers on tables. Runs after `secure`, so the
 * elements it adds are ours, not the reply's.
 * @param {DocumentFragment} fragment
 * @param {Document} doc
 */
function decorate(fragment, doc) {
  for (const pre of Array.from(fragment.querySelectorAll("pre"))) {
    const wrap = doc.createElement("div");
    wrap.className = "r3nb-code";
    const copy = doc.createElement("button");
    copy.type = "button";
    copy.className = "r3nb-copy";
    copy.textContent = "Copy";
    copy.setAttribute("aria-label", "Copy code");
    pre.replaceWith(wrap);
    wrap.append(copy, pre);
  }
  for (const table of Array.from(fragment.querySelectorAll("table"))) {
    const wrap = doc.createElement("div");
    wrap.className = "r3nb-table";
    table.replaceWith(wrap);
    wrap.append(table);
  }
}
