// Math in replies: which text is math (pandoc's rules, never currency, never code), what it
// becomes (KaTeX's MathML through an allow-list, and nothing else), and how it streams.

import assert from "node:assert/strict";
import { test } from "node:test";
import { makeDom } from "../testing/jsdom_env.mjs";
import katex from "katex";

import { MarkdownView } from "../src/incremental.js";
import { markdownToHtml } from "../src/markdown.js";
import { MATHML_ATTRS, MATHML_TAGS, MAX_TEX_CHARS, isAllowedMathml } from "../src/math.js";
import { createSanitizer } from "../src/sanitize.js";

const dom = makeDom("<!doctype html><body></body>", { pretendToBeVisual: true, url: "https://lab.example/lab" });
const win = /** @type {any} */ (dom.window);
// Every formula at once: these tests look at the DOM right after a render.
const sanitize = createSanitizer(win, { mathBudgetMs: Infinity });
const MATHML_NS = "http://www.w3.org/1998/Math/MathML";

/** The sanitized DOM of `markdown`, in a <div>. */
function render(markdown) {
  const div = win.document.createElement("div");
  div.append(sanitize(markdownToHtml(markdown)));
  return div;
}

/** The TeX sources of the rendered formulas, with display or inline. */
function formulas(div) {
  return Array.from(div.querySelectorAll("math")).map((m) => [
    m.querySelector("annotation")?.textContent,
    m.getAttribute("display") === "block" ? "display" : "inline",
  ]);
}

/** The HTML elements replies may hold (sanitize.js), and the math the allow-list lets in. */
const HTML_TAGS = new Set(["a", "b", "blockquote", "br", "button", "code", "del", "div", "em", "h1", "h2",
  "h3", "h4", "h5", "h6", "hr", "i", "kbd", "li", "ol", "p", "pre", "s", "span", "strong", "sub", "sup",
  "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul"]);
/** An independent copy of the MathML allow-list: widening math.js's must fail here. */
const ALLOWED_MATHML = new Set(["math", "semantics", "annotation", "mrow", "mi", "mn", "mo", "ms", "mtext",
  "mspace", "msup", "msub", "msubsup", "mfrac", "msqrt", "mroot", "mover", "munder", "munderover", "mtable",
  "mtr", "mtd", "mstyle", "mpadded", "mphantom", "menclose", "merror", "mmultiscripts", "mprescripts", "none"]);
const FORBIDDEN_MATHML_ATTRS = /^(?:on|href$|xlink|src$|style$|class$|id$|data-|actiontype$|xmlns)/i;

/** Everything in `div` that is neither allowed HTML nor allow-listed, renderer-made MathML. */
function violations(div) {
  const found = [];
  for (const el of div.querySelectorAll("*")) {
    const math = el.namespaceURI === MATHML_NS;
    if (math ? !ALLOWED_MATHML.has(el.localName) : !HTML_TAGS.has(el.localName)) found.push(`<${el.localName}>`);
    if (math && el.localName === "math" && el.parentElement?.closest("math")) found.push("nested <math>");
    for (const { name, value } of Array.from(el.attributes)) {
      if (name.startsWith("on") || name === "style" || (math && FORBIDDEN_MATHML_ATTRS.test(name))) {
        found.push(`${name}=${value} on <${el.localName}>`);
      }
      if (/url\(|javascript:|data:/i.test(value) && name !== "encoding") found.push(`${name}=${value}`);
      if (name === "encoding" && value !== "application/x-tex") found.push(`encoding=${value}`);
    }
  }
  return found;
}

test("inline and display math in all four notations become MathML", () => {
  const div = render(
    "Inline $x^2$, \\(a+b\\) and $$\\frac{a}{b}$$ in a line.\n\n" +
      "$$\n\\sum_{i=1}^n i = \\frac{n(n+1)}{2}\n$$\n\n" +
      "\\[\nE = mc^2\n\\]\n\nAfter.",
  );
  assert.deepEqual(formulas(div), [
    ["x^2", "inline"],
    ["a+b", "inline"],
    ["\\frac{a}{b}", "display"],
    ["\\sum_{i=1}^n i = \\frac{n(n+1)}{2}", "display"],
    ["E = mc^2", "display"],
  ]);
  for (const math of div.querySelectorAll("math")) assert.equal(math.namespaceURI, MATHML_NS);
  assert.ok(div.querySelector("mfrac") && div.querySelector("msup") && div.querySelector("munderover"));
  assert.equal(div.querySelector("code"), null, "no formula left as code");
  assert.match(div.textContent, /Inline .*in a line\..*After\./s);
  assert.deepEqual(violations(div), []);
});

test("a display formula keeps markdown-looking lines inside it", () => {
  const div = render("$$\na \\\\\n- b \\\\\n> c\n$$");
  assert.deepEqual(formulas(div), [["a \\\\\n- b \\\\\n> c", "display"]]);
  assert.equal(div.querySelector("ul, blockquote"), null);
});

test("currency and other dollars stay text", () => {
  for (const text of [
    "It costs $5 and $10.",
    "Between $3-$4 a day",
    "$5, $6, or $7",
    "Pay $ 5 $ now",
    "a $x $ b",
    "Price: $20$30",
    "Escaped \\$x\\$ and \\$5 and $6",
    "US$5 or US$6",
    "$",
    "$$",
    "$$ alone",
  ]) {
    const div = render(text);
    assert.equal(div.querySelector("math, code"), null, `${text} became ${div.innerHTML}`);
  }
  assert.equal(render("Escaped \\$x\\$ here").textContent.trim(), "Escaped $x$ here");
  // A `$` that cannot close a formula (followed by a digit, preceded by a space) ends it.
  assert.deepEqual(formulas(render("$a$1 and $b$")), [["b", "inline"]]);
  assert.deepEqual(formulas(render("costs $5 but $x$ is math")), [["x", "inline"]]);
});

test("code spans and code blocks never hold math", () => {
  const div = render("Use `$x^2$` or `\\(y\\)`.\n\n```\n$$z$$\n```\n\n    $w$ indented\n\n~~~tex\n\\[ q \\]\n~~~");
  assert.equal(div.querySelector("math"), null, div.innerHTML);
  const code = Array.from(div.querySelectorAll("code")).map((c) => c.textContent);
  assert.deepEqual(code, ["$x^2$", "\\(y\\)", "$$z$$", "$w$ indented", "\\[ q \\]"]);
});

test("a formula KaTeX cannot parse, or too long, or too deep, stays as its source in code", () => {
  const long = "x+".repeat(MAX_TEX_CHARS / 2) + "y";
  let deep = "x";
  for (let i = 0; i < 60; i++) deep = `\\frac{${deep}}{y}`;
  const div = render(`Broken $\\frac{a}{$ here.\n\nLong $${long}$.\n\nDeep $$${deep}$$`);
  assert.equal(div.querySelector("math"), null);
  const code = Array.from(div.querySelectorAll("code.r3nb-math")).map((c) => c.textContent);
  assert.deepEqual(code, ["\\frac{a}{", long, deep]);
  assert.deepEqual(formulas(render("$$" + long.slice(0, MAX_TEX_CHARS - 10) + "$$")).length, 1);
});

const HOSTILE_TEX = [
  "$\\href{javascript:alert(1)}{x}$",
  "$\\url{javascript:alert(1)}$",
  "$\\htmlClass{x}{y}$",
  "$\\htmlId{jupyter-config-data}{y}$",
  "$\\htmlData{onclick=alert(1)}{y}$",
  "$\\htmlStyle{background:url(https://evil.example/x)}{y}$",
  "$\\includegraphics{https://evil.example/x.png}$",
  "$<img src=x onerror=alert(1)>$",
  "$$</math><img src=x onerror=alert(1)>$$",
  "$\\text{<script>alert(1)</script>}$",
  "$\\color{url(https://evil.example)}{x}$",
  "$\\fcolorbox{red}{blue}{boxed}$",
  "$\\rule{100000em}{100000em}$ and $\\kern{100000em}$ and $\\hspace{100000em}$",
  "$\\def\\a{\\a\\a}\\a$",
  "$\\def\\x{\\x}\\x$",
  "$\\mathrm{\\href{https://evil.example}{y}}$",
];
/** Raw MathML/SVG the reply writes itself: always text, never elements. */
const RAW_MARKUP = [
  '<math><maction actiontype="statusline"><mi>x</mi><mtext>click</mtext></maction></math>',
  '<math href="javascript:alert(1)"><mi>x</mi></math>',
  '<math><mi xlink:href="javascript:alert(1)">x</mi></math>',
  '<math><annotation-xml encoding="text/html"><img src=x onerror=alert(1)></annotation-xml></math>',
  "<svg><foreignObject><img src=x onerror=alert(1)></foreignObject></svg>",
  '<math display="block"><mi>x</mi></math> and $y$',
];

test("hostile TeX becomes allow-listed MathML or code, nothing else", () => {
  for (const text of HOSTILE_TEX) {
    const div = render(text);
    assert.deepEqual(violations(div), [], `${text} → ${div.innerHTML}`);
    assert.ok(div.querySelector("math, code.r3nb-math"), `${text}: neither math nor code`);
    assert.equal(div.querySelector("img, script, a, [href], [id]"), null, `${text} → ${div.innerHTML}`);
  }
  // Sizes are bounded: KaTeX's maxSize clamps rules and kerns to 20em.
  const sized = render(HOSTILE_TEX[12]);
  for (const el of sized.querySelectorAll("[width], [height]")) {
    for (const attr of ["width", "height"]) {
      const value = el.getAttribute(attr);
      if (value) assert.ok(Math.abs(parseFloat(value)) <= 20, `${attr}=${value}`);
    }
  }
  // The `<img>` written inside a formula is typeset as characters.
  const img = render(HOSTILE_TEX[7]);
  assert.equal(img.querySelectorAll("math").length, 1);
  assert.match(img.querySelector("annotation")?.textContent ?? "", /^<img src=x onerror=alert\(1\)>$/);
});

test("MathML the reply writes itself is shown as text", () => {
  for (const text of RAW_MARKUP) {
    const div = render(text);
    const made = formulas(div);
    assert.deepEqual(made, text.endsWith("$y$") ? [["y", "inline"]] : [], `${text} → ${div.innerHTML}`);
    assert.equal(div.querySelector("maction, annotation-xml, svg, foreignObject, img, mi[href], math[href]"), null);
    assert.ok(div.textContent.includes(text.replace(/ and \$y\$$/, "")), `${text} not shown as text`);
    assert.deepEqual(violations(div), []);
  }
});

test("the allow-list holds whatever KaTeX returns", (t) => {
  // As if KaTeX itself were compromised: what it returns must still pass the allow-list.
  // An element outside the list, or an unsafe value, leaves the source as code; an attribute
  // outside the list is dropped.
  const rejected = [
    '<math><maction actiontype="statusline"><mi>x</mi><mtext>y</mtext></maction></math>',
    '<math><mtext><img src=x onerror="alert(1)"></mtext></math>',
    '<math><annotation-xml encoding="text/html"><a href="javascript:alert(1)">x</a></annotation-xml></math>',
    '<math><mglyph src="https://evil.example/g.png"></mglyph></math>',
    "<svg><circle r=1></circle></svg>",
    "<math><mi>a</mi></math><math><mi>b</mi></math>",
    '<math><annotation encoding="text/html">x</annotation></math>',
    '<math><mspace width="url(https://evil.example/x)"></mspace></math>',
  ];
  const stripped = [
    "<math><mi>a</mi></math><img src=x onerror=alert(1)>", // only the <math> is taken
    '<math><mi href="javascript:alert(1)">x</mi></math>',
    '<math><mi style="background:url(https://evil.example/x)">x</mi></math>',
    '<math><mi class="jp-Dialog" id="jupyter-config-data">x</mi></math>',
    '<math><mi onclick="alert(1)" data-x="1" xlink:href="javascript:alert(1)">x</mi></math>',
  ];
  let next = "";
  t.mock.method(katex, "renderToString", () => `<span class="katex">${next}</span>`);
  [...rejected, ...stripped].forEach((output, i) => {
    next = output;
    const div = render(`$forged_${i}$`); // a new source each time: nothing cached
    assert.deepEqual(violations(div), [], `${output} → ${div.innerHTML}`);
    assert.equal(div.querySelector("img, a, svg, maction, mglyph, annotation-xml, [href], [id], [class]:not(code)"), null, div.innerHTML);
    if (i < rejected.length) {
      assert.equal(div.querySelector("math"), null, `${output} was let in: ${div.innerHTML}`);
      assert.equal(div.querySelector("code.r3nb-math")?.textContent, `forged_${i}`);
    } else {
      assert.equal(div.querySelectorAll("math").length, 1, `${output} → ${div.innerHTML}`);
    }
  });
  next = '<math><mi mathvariant="bold">ok</mi></math>';
  assert.equal(render("$forged_ok$").querySelector("mi")?.getAttribute("mathvariant"), "bold");
});

test("isAllowedMathml checks elements, namespaces, attributes and values", () => {
  const parse = (html) => {
    const div = win.document.createElement("div");
    div.innerHTML = html;
    return div.firstElementChild;
  };
  assert.ok(isAllowedMathml(parse('<math display="block"><mi mathvariant="bold">x</mi></math>')));
  assert.ok(!isAllowedMathml(parse("<math><maction><mi>x</mi></maction></math>")));
  assert.ok(!isAllowedMathml(parse('<math><mi href="https://ok.example">x</mi></math>')));
  assert.ok(!isAllowedMathml(parse('<math><mi mathcolor="url(#x)">x</mi></math>')));
  assert.ok(!isAllowedMathml(parse('<math><mtext><b>x</b></mtext></math>')));
  assert.ok(!isAllowedMathml(parse("<mi>x</mi>")), "an HTML <mi> is not MathML");
  assert.ok(!isAllowedMathml(parse("<math><annotation encoding='text/html'>x</annotation></math>")));
  for (const tag of ["maction", "annotation-xml", "mglyph", "a", "img", "svg"]) assert.ok(!MATHML_TAGS.includes(tag));
  for (const attr of ["href", "style", "class", "id", "src", "actiontype"]) assert.ok(!MATHML_ATTRS.includes(attr));
});

test("each formula is typeset once, however often its text is rendered", (t) => {
  const calls = t.mock.method(katex, "renderToString");
  const text = "Twice $\\alpha_{cached}$ and $\\alpha_{cached}$, once $$\\beta_{cached}$$.";
  for (let i = 0; i < 20; i++) assert.equal(render(text).querySelectorAll("math").length, 3);
  assert.equal(calls.mock.callCount(), 2);
});

/** Runs one animation frame's work now (no waiting for the real rAF). */
function frame(view) {
  view.cancel();
  view.notBefore = 0;
  view.onFrame();
}

test("while streaming, an unclosed $$ shows as text until its closing $$ arrives", () => {
  const container = win.document.createElement("div");
  const view = new MarkdownView(container, { sanitize, onRender() {} });
  const reply = "The sum:\n\n$$\n\\sum_{k=1}^{n} k = \\frac{n(n+1)}{2}\n$$\n\nand inline $e^{i\\pi}+1=0$ too.\n\nEnd.";
  const closing = reply.indexOf("$$", reply.indexOf("$$") + 2);
  let sawText = false;
  for (let i = 0; i < reply.length; i += 4) {
    view.append(reply.slice(i, i + 4));
    frame(view);
    const end = Math.min(i + 4, reply.length);
    if (end > reply.indexOf("$$") + 2 && end < closing + 2) {
      assert.equal(container.querySelector("math"), null, `math before its end at ${end}`);
      if (container.textContent.includes("\\sum_{k=1}")) sawText = true;
    }
    assert.deepEqual(violations(container), []);
  }
  assert.ok(sawText, "the open formula was shown as text while it streamed");
  view.finish(reply);
  while (!view.settled) frame(view);
  assert.deepEqual(formulas(container), [
    ["\\sum_{k=1}^{n} k = \\frac{n(n+1)}{2}", "display"],
    ["e^{i\\pi}+1=0", "inline"],
  ]);
  assert.equal(container.querySelector(".r3nb-blocks")?.innerHTML, render(reply).innerHTML);
});

test("a burst of new formulas is typeset over several frames, never all in one task", async () => {
  // Budget 0: one new formula per frame, the others shown as their source meanwhile.
  const slow = createSanitizer(win, { mathBudgetMs: 0 });
  const nextFrame = () => new Promise((resolve) => win.requestAnimationFrame(resolve));
  const div = win.document.createElement("div");
  win.document.body.append(div);
  div.append(slow(markdownToHtml("$burst_1$ $burst_2$ and $$burst_3$$")));
  const counts = [div.querySelectorAll("math").length];
  for (let i = 0; i < 3; i++) {
    await nextFrame();
    counts.push(div.querySelectorAll("math").length);
  }
  assert.deepEqual(counts, [0, 1, 2, 3]);
  assert.deepEqual(formulas(div), [["burst_1", "inline"], ["burst_2", "inline"], ["burst_3", "display"]]);
  // Typeset before: all at once, whatever the budget.
  const again = win.document.createElement("div");
  again.append(slow(markdownToHtml("$burst_1$ $burst_2$ and $$burst_3$$")));
  assert.equal(again.querySelectorAll("math").length, 3);
  // A placeholder replaced before its turn (a tail rendered again) costs nothing later.
  div.replaceChildren(slow(markdownToHtml("$gone_1$")));
  const stale = div.querySelector("p");
  div.replaceChildren(slow(markdownToHtml("$kept_1$")));
  await nextFrame();
  assert.equal(stale?.querySelector("math"), null, "the replaced text was not typeset");
  assert.deepEqual(formulas(div), [["kept_1", "inline"]]);
  div.remove();
});
