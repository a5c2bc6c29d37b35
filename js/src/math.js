// TeX math in replies: `$…$`, `$$…$$`, `\(…\)` and `\[…\]`, typeset by KaTeX into MathML.
//
// Two steps, so that math markup can only come from here, never from the reply:
// 1. markdown.js finds the formulas (the marked extensions below) and writes each one as a
//    placeholder, `<code class="r3nb-math">TeX</code>`, that the sanitizer treats like any
//    other code (it still strips every `<math>` and `<svg>` the reply writes itself);
// 2. after sanitizing, `createTypesetter` replaces each placeholder by KaTeX's MathML for
//    its text, itself passed through a MathML allow-list. A formula KaTeX refuses, or one
//    too long or too deeply nested to typeset in a few milliseconds, stays as code.
//
// MathML only (no HTML output): Chromium, Firefox and Safari render MathML Core without
// KaTeX's fonts or CSS, so nothing is fetched. Rendered formulas are cached by their
// source: while a reply streams its tail is rendered again every few frames.

import katex from "katex";
import DOMPurify from "dompurify";

/** Longer formulas stay as code (KaTeX takes ~10 ms for 2,000 characters). */
export const MAX_TEX_CHARS = 2000;
/** Deeper brace nesting stays as code (a formula's cost grows with its depth). */
export const MAX_TEX_DEPTH = 50;
/** Rendered formulas remembered, per source (and, per document, as sanitized DOM). */
const CACHE_SIZE = 500;

const KATEX_OPTIONS = /** @type {const} */ ({
  output: "mathml",
  trust: false, // no \href, \url, \includegraphics, \htmlClass/\htmlData/\htmlId/\htmlStyle
  throwOnError: true, // a parse error shows the source as code, as in %%chat output
  strict: "ignore",
  maxSize: 20, // em: \rule, \kern and friends
  maxExpand: 500, // macro expansions (\def loops)
});

/** The MathML elements a formula may contain (MathML Core presentation markup). */
export const MATHML_TAGS = [
  "math", "semantics", "annotation", "mrow", "mi", "mn", "mo", "ms", "mtext", "mspace",
  "msup", "msub", "msubsup", "mfrac", "msqrt", "mroot", "mover", "munder", "munderover",
  "mtable", "mtr", "mtd", "mstyle", "mpadded", "mphantom", "menclose", "merror",
  "mmultiscripts", "mprescripts", "none",
];
/** Their attributes: layout only. No href, no style, no class or id, no event handler. */
export const MATHML_ATTRS = [
  "display", "displaystyle", "scriptlevel", "mathvariant", "mathcolor", "mathbackground",
  "stretchy", "fence", "separator", "form", "largeop", "movablelimits", "symmetric",
  "accent", "accentunder", "lspace", "rspace", "minsize", "maxsize", "width", "height",
  "depth", "voffset", "linethickness", "notation", "columnalign", "rowalign", "columnspacing",
  "rowspacing", "columnlines", "rowlines", "frame", "framespacing", "equalrows",
  "equalcolumns", "columnspan", "rowspan", "encoding",
];
/** Attribute values: lengths, names, colours. No parentheses, colons or quotes (no url()). */
const SAFE_VALUE = /^[\w\s.,#%+-]*$/;
const MATHML_NS = "http://www.w3.org/1998/Math/MathML";
const ENCODINGS = ["application/x-tex"];

const PURIFY_CONFIG = {
  ALLOWED_TAGS: [...MATHML_TAGS, "#text"],
  ALLOWED_ATTR: MATHML_ATTRS,
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
  KEEP_CONTENT: false,
  RETURN_DOM_FRAGMENT: /** @type {const} */ (true),
};

/** KaTeX's MathML per `display + source`, or null when it is not typeset. */
const rendered = new Map();

/**
 * @param {Map<string, any>} cache
 * @param {string} key
 * @param {any} value
 */
function remember(cache, key, value) {
  const oldest = cache.size >= CACHE_SIZE ? cache.keys().next().value : undefined;
  if (oldest !== undefined) cache.delete(oldest);
  cache.set(key, value);
}

/**
 * Whether `tex` is small enough to typeset: at most MAX_TEX_CHARS, braces nested at most
 * MAX_TEX_DEPTH deep.
 * @param {string} tex
 */
export function isTypesettable(tex) {
  if (tex.length > MAX_TEX_CHARS) return false;
  let depth = 0;
  for (let i = 0; i < tex.length; i++) {
    const c = tex[i];
    if (c === "\\") i++;
    else if (c === "{" && ++depth > MAX_TEX_DEPTH) return false;
    else if (c === "}") depth--;
  }
  return true;
}

/**
 * KaTeX's MathML for `tex` (a string still to be checked by the allow-list), or null.
 * @param {string} tex
 * @param {boolean} display
 * @returns {string | null}
 */
export function texToMathml(tex, display) {
  const key = `${display ? "D" : "I"}${tex}`;
  if (rendered.has(key)) return rendered.get(key);
  let mathml = null;
  if (isTypesettable(tex)) {
    try {
      const html = katex.renderToString(tex, { ...KATEX_OPTIONS, displayMode: display });
      const start = html.indexOf("<math");
      const end = html.lastIndexOf("</math>");
      if (start !== -1 && end > start) mathml = html.slice(start, end + "</math>".length);
    } catch {
      mathml = null; // a ParseError (or anything else): the source stays as code
    }
  }
  remember(rendered, key, mathml);
  return mathml;
}

/**
 * Whether `root` and everything in it is allow-listed MathML. DOMPurify already applied
 * the lists; this checks them again, independently, before anything reaches the page.
 * @param {Element} root
 */
export function isAllowedMathml(root) {
  for (const el of [root, ...Array.from(root.querySelectorAll("*"))]) {
    if (el.namespaceURI !== MATHML_NS || !MATHML_TAGS.includes(el.localName)) return false;
    for (const { name, value } of Array.from(el.attributes)) {
      if (!MATHML_ATTRS.includes(name)) return false;
      if (name === "encoding" ? !ENCODINGS.includes(value) : !SAFE_VALUE.test(value)) return false;
    }
  }
  return root.localName === "math";
}

/**
 * @callback Typeset
 * @param {DocumentFragment | Element} fragment  sanitized HTML with math placeholders
 * @returns {void}
 */

/**
 * KaTeX's work allowed per task, in ms: a burst of new formulas (a reply loaded complete,
 * a chunk of text that arrived within one frame) is typeset over the next frames, each
 * formula shown as its source until then. Formulas typeset before cost no KaTeX work.
 */
export const TYPESET_BUDGET_MS = 8;
/** Placeholders waiting for their turn, at most (any more stay as code). */
const MAX_PENDING = 5000;
/** The KaTeX time spent in the current task; reset by a microtask when the task ends. */
const spent = { ms: 0, open: false };

function startTask() {
  if (spent.open) return;
  spent.open = true;
  spent.ms = 0;
  queueMicrotask(() => {
    spent.open = false;
  });
}

/**
 * @param {Window & typeof globalThis} win  the window whose document receives the math
 * @param {{ budgetMs?: number }} [options]  KaTeX time per task (Infinity: all at once)
 * @returns {Typeset}
 */
export function createTypesetter(win, { budgetMs = TYPESET_BUDGET_MS } = {}) {
  const purify = DOMPurify(win);
  /** @type {Map<string, Element | null>} sanitized <math> per `display + source` */
  const elements = new Map();
  /** @type {Set<Element>} placeholders left for a later frame */
  const pending = new Set();
  let frame = 0;
  // KaTeX's first formula costs ~100 ms (its code is compiled then): pay it while idle,
  // not in the frame that shows a reply's first formula.
  win.requestIdleCallback?.(() => texToMathml("\\frac{a^2}{\\sqrt{b_1}} + \\sum_{i=0}^n x_i", false), { timeout: 10_000 });

  /**
   * @param {string} tex
   * @param {boolean} display
   * @returns {Element | null}
   */
  function mathElement(tex, display) {
    const key = `${display ? "D" : "I"}${tex}`;
    if (!elements.has(key)) {
      const mathml = texToMathml(tex, display);
      let element = null;
      if (mathml !== null) {
        const fragment = purify.sanitize(mathml, PURIFY_CONFIG);
        // An element the list dropped would leave the formula incomplete: show the source.
        // (DOMPurify lists the <body> it parsed into as removed too.)
        const dropped = purify.removed.some((entry) => "element" in entry && entry.element.nodeName !== "BODY");
        const only = fragment.firstElementChild;
        if (!dropped && only && fragment.childElementCount === 1 && isAllowedMathml(only)) element = only;
      }
      remember(elements, key, element);
    }
    const element = elements.get(key);
    return element ? /** @type {Element} */ (element.cloneNode(true)) : null;
  }

  /**
   * Typesets one placeholder if it is cached or the task's budget allows (`force`: always).
   * @param {Element} code
   * @param {boolean} force
   * @returns {boolean}  false when it must wait
   */
  function typesetOne(code, force) {
    const display = code.classList.contains("r3nb-math-display");
    const tex = code.textContent ?? "";
    startTask();
    if (!elements.has(`${display ? "D" : "I"}${tex}`) && !force && spent.ms >= budgetMs) return false;
    const start = performance.now();
    const math = mathElement(tex, display);
    spent.ms += performance.now() - start;
    if (math) code.replaceWith(math);
    return true;
  }

  /** Later frames: the placeholders still shown (or about to be), within the budget. */
  function flush() {
    frame = 0;
    let first = true;
    for (const code of pending) {
      // Still in the page, or in a fragment about to be inserted; not in a replaced tail.
      const root = code.getRootNode();
      if (code.isConnected || root.nodeType === 11) {
        if (!typesetOne(code, first)) break;
        first = false;
      }
      pending.delete(code);
    }
    if (pending.size) frame = win.requestAnimationFrame(flush);
  }

  return (fragment) => {
    for (const code of Array.from(fragment.querySelectorAll("code.r3nb-math"))) {
      if (code.closest("pre")) continue; // never inside a code block
      if (!typesetOne(code, false) && pending.size < MAX_PENDING) pending.add(code);
    }
    if (pending.size && !frame) frame = win.requestAnimationFrame(flush);
  };
}

// --- finding formulas in Markdown (marked extensions) -------------------------------------

/**
 * The end of inline `$…$` math at the start of `src`, or -1. Pandoc's rules: the opening
 * `$` is not followed by a space, the closing one not preceded by a space nor followed by
 * a digit; `\$` is a dollar. Stricter than pandoc, the formula ends at its first unescaped
 * `$`: when that one cannot close it, it is not math. So "$5 and $10" and "costs $5 but
 * $x$ is" keep their prices as text.
 * @param {string} src  starts with "$" (not "$$")
 */
function singleDollarEnd(src) {
  if (src.length < 3 || /\s/.test(src[1])) return -1;
  for (let i = 1; i < src.length; i++) {
    const c = src[i];
    if (c === "\\") i++;
    else if (c === "\n" && /^\n[ \t]*\n/.test(src.slice(i))) return -1;
    else if (c === "$") {
      return i > 1 && !/\s/.test(src[i - 1]) && !/\d/.test(src[i + 1] ?? "") ? i + 1 : -1;
    }
  }
  return -1;
}

/**
 * The end of `open`…`close` at the start of `src` with non-blank content and no blank line
 * inside, or -1.
 * @param {string} src
 * @param {string} open
 * @param {string} close
 */
function delimitedEnd(src, open, close) {
  const end = src.indexOf(close, open.length);
  if (end === -1) return -1;
  const body = src.slice(open.length, end);
  if (!body.trim() || /\n[ \t]*\n/.test(body)) return -1;
  return end + close.length;
}

/** @type {[string, string, boolean][]} opening, closing, display */
const DELIMITERS = [["$$", "$$", true], ["\\[", "\\]", true], ["\\(", "\\)", false]];

/**
 * A math token at the start of `src` (inline level), or undefined.
 * @param {string} src
 */
function inlineMath(src) {
  for (const [open, close, display] of DELIMITERS) {
    if (!src.startsWith(open)) continue;
    const end = delimitedEnd(src, open, close);
    if (end !== -1) return mathToken(src.slice(0, end), src.slice(open.length, end - close.length), display);
    if (open === "$$") return undefined; // "$$" unclosed (streaming): text, not "$" + "$…$"
  }
  if (src[0] === "$") {
    const end = singleDollarEnd(src);
    if (end !== -1) return mathToken(src.slice(0, end), src.slice(1, end - 1), false);
  }
  return undefined;
}

/** A display formula alone on its lines: `$$` or `\[` opening a line, closing on a later one. */
const BLOCK_MATH = /^ {0,3}(\$\$|\\\[)([\s\S]*?)(\$\$|\\\])[ \t]*(?:\n|$)/;

/**
 * A block math token at the start of `src`, or undefined.
 * @param {string} src
 */
function blockMath(src) {
  const m = BLOCK_MATH.exec(src);
  if (!m || m[3] !== (m[1] === "$$" ? "$$" : "\\]")) return undefined;
  if (!m[2].trim() || /\n[ \t]*\n/.test(m[2])) return undefined;
  return mathToken(m[0], m[2], true);
}

/**
 * @param {string} raw
 * @param {string} tex
 * @param {boolean} display
 */
function mathToken(raw, tex, display) {
  return { type: "math", raw, text: tex.trim(), display };
}

/**
 * The placeholder of a formula: its source as code, typeset after sanitizing.
 * @param {string} tex
 * @param {boolean} display
 * @param {(text: string) => string} escape
 */
function placeholder(tex, display, escape) {
  return `<code class="r3nb-math${display ? " r3nb-math-display" : ""}">${escape(tex)}</code>`;
}

/**
 * marked extensions for math: a block formula (`$$` or `\[` starting a line) and inline
 * ones. Code spans and code blocks are lexed before them and never hold math.
 * @param {(text: string) => string} escape  HTML escaping
 * @returns {import("marked").MarkedExtension}
 */
export function mathExtension(escape) {
  /** @param {any} token */
  const renderer = (token) => placeholder(token.text, token.display, escape);
  return {
    extensions: [
      {
        name: "blockMath",
        level: "block",
        start(src) {
          const m = /(?:^|\n) {0,3}(?:\$\$|\\\[)/.exec(src);
          return m ? m.index + (m[0][0] === "\n" ? 1 : 0) : undefined;
        },
        tokenizer(src) {
          const token = blockMath(src);
          return token && { ...token, type: "blockMath" };
        },
        renderer: (token) => `<p>${renderer(token)}</p>\n`,
      },
      {
        name: "inlineMath",
        level: "inline",
        start(src) {
          const m = /\$|\\[[(]/.exec(src);
          return m ? m.index : undefined;
        },
        tokenizer(src) {
          const token = inlineMath(src);
          return token && { ...token, type: "inlineMath" };
        },
        renderer,
      },
    ],
  };
}
