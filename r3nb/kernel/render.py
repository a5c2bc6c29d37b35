"""A reply's Markdown as HTML that stays inert in any notebook frontend.

JupyterLab, Notebook 7 and VS Code render the output of a cell just run as *trusted*: its
HTML (or the HTML its Markdown becomes) goes into the page unsanitized, scripts and event
handlers included. A reply is untrusted (a prompt injection in an attached document or
DataFrame steers it), so the kernel renders it itself, with the panel's rules
(js/src/markdown.js + sanitize.js), and sends only HTML it built:

- raw HTML the model wrote is shown as text (``html: False``: every character of the
  reply reaches the page escaped);
- links go to http(s) and mailto only; any other target leaves the link as plain text;
- images are never loaded on their own (a URL can carry data out): an http(s) image
  becomes a link naming its host, any other one a ``[image: alt]`` text;
- math (``$…$``, ``$$…$$``, ``\\(…\\)``, ``\\[…\\]``, with the panel's rules: ``$5 and $10``
  stays text) is typeset here, by latex2mathml, into MathML rebuilt from an allow-list
  (``MATH_ELEMENTS``, ``MATH_ATTRIBUTES``); what cannot be typeset shows as its TeX in
  code. MathJax is told to skip the output: its ``\\href`` and friends are not ours to vet.

Loading markdown-it takes tens of milliseconds, so ``view.py`` imports this module when
it shows a reply, never at ``%load_ext``.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit
from xml.etree.ElementTree import Element

from latex2mathml.converter import convert_to_element
from markdown_it import MarkdownIt
from markdown_it.rules_inline import StateInline
from markdown_it.token import Token
from mdit_py_plugins.dollarmath import dollarmath_plugin

#: URL schemes a link may have; relative links would resolve against the Jupyter server.
LINK_SCHEMES = frozenset({"http", "https", "mailto"})
#: The wrapper's classes: ``mathjax_ignore`` (MathJax 3, JupyterLab 4 / Notebook 7) and
#: ``tex2jax_ignore`` (MathJax 2, classic frontends) keep ``$…$`` as text.
WRAPPER_CLASS = "r3nb-reply mathjax_ignore tex2jax_ignore"
_ALIGN = re.compile(r"^text-align:(left|right|center)$")
# What browsers drop from a URL before reading its scheme (tabs, newlines, controls).
_IGNORED_IN_URL = re.compile(r"[\x00-\x20\x7f-\x9f]")
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*):", re.IGNORECASE)
_LINK_ATTRS = (("target", "_blank"), ("rel", "noopener noreferrer"))


def scheme_of(url: str) -> str:
    """The scheme of ``url`` as a browser reads it, lower case; "" when it has none."""
    match = _SCHEME.match(_IGNORED_IN_URL.sub("", url))
    return match.group(1).lower() if match else ""


def is_allowed_link(url: str) -> bool:
    return scheme_of(url) in LINK_SCHEMES


def escape(text: str) -> str:
    return html.escape(text, quote=True)


def markdown_html(text: str) -> str:
    """The HTML of ``text`` (Markdown): CommonMark, tables and strikethrough."""
    return str(_renderer().render(text))


def reply_html(markdown: str, *, note: str = "", note_label: str = "") -> str:
    """A whole output: the reply rendered, then a line of plain text (the footer, or why
    the reply did not finish) with an optional bold label. ``note`` is escaped, never
    parsed: it carries provider error text."""
    parts = [f'<div class="{WRAPPER_CLASS}">', markdown_html(markdown) if markdown else ""]
    if note or note_label:
        label = f"<strong>{escape(note_label)}</strong> " if note_label else ""
        parts.append(f'<p class="r3nb-note">{label}<em>{escape(note)}</em></p>')
    parts.append("</div>")
    return "".join(parts)


def preformatted_html(text: str) -> str:
    """``text`` shown as it is (monospace, escaped, no autolinks): for transcripts."""
    return f'<div class="{WRAPPER_CLASS}"><pre>{escape(text)}</pre></div>'


# --- the renderer ------------------------------------------------------------------------


@functools.cache
def _renderer() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
    # Checked on every link, image and autolink target after entity decoding and
    # normalisation; a target that fails leaves the construct as literal text.
    md.validateLink = is_allowed_link  # type: ignore[method-assign]
    md.add_render_rule("link_open", _link_open)
    md.add_render_rule("image", _image)
    md.add_render_rule("th_open", _cell_open)
    md.add_render_rule("td_open", _cell_open)
    # Math with pandoc's rules for `$` (as js/src/math.js): no space inside the dollars, no
    # digit after the closing one, no blank line in a formula.
    md.use(
        dollarmath_plugin,
        allow_labels=False,
        allow_space=False,
        allow_digits=False,
        allow_blank_lines=False,
        double_inline=True,
    )
    md.inline.ruler.before("escape", "math_brackets", _bracket_math)
    md.add_render_rule("math_inline", _math_rule(display=False))
    md.add_render_rule("math_inline_double", _math_rule(display=True))
    md.add_render_rule("math_block", _math_rule(display=True, block=True))
    return md


def _link_open(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    for name, value in _LINK_ATTRS:
        token.attrSet(name, value)
    return str(self.renderToken(tokens, idx, options, env))


def _image(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    """Never an ``<img>``: a link naming the host (opened only by a click), or text."""
    token = tokens[idx]
    alt = self.renderInlineAsText(token.children or [], options, env)
    src = str(token.attrGet("src") or "")
    host = urlsplit(src).hostname if scheme_of(src) in ("http", "https") else None
    if not host:
        return f"[image{': ' if alt else ''}{escape(alt)}]"
    label = f"[image from {escape(host)}{': ' if alt else ''}{escape(alt)}]"
    if _inside_link(tokens, idx):  # a link in a link is not valid HTML: the outer one wins
        return label
    return (
        f'<a href="{escape(src)}" target="_blank" rel="noopener noreferrer"'
        f' class="r3nb-image-link">{label}</a>'
    )


def _inside_link(tokens: Sequence[Token], idx: int) -> bool:
    depth = 0
    for token in tokens[:idx]:
        if token.type == "link_open":
            depth += 1
        elif token.type == "link_close":
            depth -= 1
    return depth > 0


def _cell_open(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    """Column alignment as ``align``: the output carries no ``style`` attribute at all."""
    token = tokens[idx]
    style = str(token.attrGet("style") or "")
    if token.attrs:
        token.attrs.pop("style", None)
    match = _ALIGN.match(style)
    if match:
        token.attrSet("align", match.group(1))
    return str(self.renderToken(tokens, idx, options, env))


# --- math --------------------------------------------------------------------------------

#: Longer formulas, or braces nested deeper, stay as code: their cost grows with both.
MAX_TEX_CHARS = 2000
MAX_TEX_DEPTH = 50
#: The MathML a formula may become (MathML Core presentation markup; the same list as
#: js/src/math.js). No maction, mglyph or annotation-xml: they act, load or hold HTML.
MATH_ELEMENTS = frozenset({
    "math", "semantics", "annotation", "mrow", "mi", "mn", "mo", "ms", "mtext", "mspace",
    "msup", "msub", "msubsup", "mfrac", "msqrt", "mroot", "mover", "munder", "munderover",
    "mtable", "mtr", "mtd", "mstyle", "mpadded", "mphantom", "menclose", "merror",
    "mmultiscripts", "mprescripts", "none",
})  # fmt: skip
#: Their attributes: layout only (no href, style, class, id or event handler); any other
#: attribute is dropped.
MATH_ATTRIBUTES = frozenset({
    "displaystyle", "scriptlevel", "mathvariant", "mathcolor", "mathbackground", "stretchy",
    "fence", "separator", "form", "largeop", "movablelimits", "symmetric", "accent",
    "accentunder", "lspace", "rspace", "minsize", "maxsize", "width", "height", "depth",
    "voffset", "linethickness", "notation", "columnalign", "rowalign", "columnspacing",
    "rowspacing", "columnlines", "rowlines", "frame", "framespacing", "equalrows",
    "equalcolumns", "columnspan", "rowspan",
})  # fmt: skip
#: Attribute values: lengths, names, colours; no parentheses, colons or quotes (no url()).
_SAFE_VALUE = re.compile(r"^[\w\s.,#%+-]*$")
_LENGTH = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*([a-z]*)\s*$")
_LENGTH_ATTRIBUTES = frozenset({"width", "height", "depth", "lspace", "rspace", "voffset"})
#: Lengths in em (roughly): a \rule or \kern larger than MAX_EM is dropped (KaTeX clamps).
_EM_PER_UNIT = {"": 1.0, "em": 1.0, "ex": 0.5, "mu": 1 / 18, "pt": 0.1, "px": 1 / 16,
                "pc": 1.2, "mm": 0.28, "cm": 2.8, "in": 7.2}  # fmt: skip
MAX_EM = 20.0
_MATHML_NS = "{http://www.w3.org/1998/Math/MathML}"


class UnsafeMathError(ValueError):
    """latex2mathml produced markup outside the allow-list."""


def is_typesettable(tex: str) -> bool:
    """At most MAX_TEX_CHARS, braces nested at most MAX_TEX_DEPTH deep."""
    if len(tex) > MAX_TEX_CHARS:
        return False
    depth, i = 0, 0
    while i < len(tex):
        if tex[i] == "\\":
            i += 1
        elif tex[i] == "{":
            depth += 1
            if depth > MAX_TEX_DEPTH:
                return False
        elif tex[i] == "}":
            depth -= 1
        i += 1
    return True


@functools.lru_cache(maxsize=512)
def math_html(tex: str, display: bool) -> str:
    """``tex`` as allow-listed MathML, or as escaped code when it cannot be typeset.
    Cached: a streaming reply is rendered again at every live update."""
    tex = tex.strip()
    body = _typeset(tex, display) if tex and is_typesettable(tex) else None
    if body is None:
        cls = "r3nb-math r3nb-math-display" if display else "r3nb-math"
        return f'<code class="{cls}">{escape(tex)}</code>'
    return (
        f'<math display="{"block" if display else "inline"}"><semantics>{body}'
        f'<annotation encoding="application/x-tex">{escape(tex)}</annotation></semantics></math>'
    )


def _typeset(tex: str, display: bool) -> str | None:
    """The allow-listed MathML inside ``<math>`` for ``tex``, or None."""
    try:
        root = convert_to_element(tex, display="block" if display else "inline")
        body = "".join(_mathml(child) for child in root)
    except Exception:  # any failure (parse, recursion, allow-list): the source is shown
        return None
    # <semantics> typesets its first child only.
    return body if len(root) == 1 else f"<mrow>{body}</mrow>"


def _mathml(element: Element) -> str:
    """``element`` rebuilt from the allow-list: its own text escaped, never its markup."""
    tag = str(element.tag).removeprefix(_MATHML_NS)
    if tag not in MATH_ELEMENTS or tag == "math":
        raise UnsafeMathError(tag)
    attrs = []
    for name, value in element.attrib.items():
        if name not in MATH_ATTRIBUTES or _too_large(name, value):
            continue
        if not _SAFE_VALUE.match(value):
            raise UnsafeMathError(f"{name}={value!r}")
        attrs.append(f' {name}="{escape(value)}"')
    # latex2mathml keeps characters as entity strings ("&#x02211;") in its text.
    text = escape(html.unescape(element.text or ""))
    children = "".join(_mathml(child) for child in element)
    tail = escape(html.unescape(element.tail or ""))
    return f"<{tag}{''.join(attrs)}>{text}{children}</{tag}>{tail}"


def _too_large(name: str, value: str) -> bool:
    if name not in _LENGTH_ATTRIBUTES:
        return False
    match = _LENGTH.match(value)
    if not match or match.group(2) not in _EM_PER_UNIT:
        return False  # not a plain length: the value check decides
    return abs(float(match.group(1)) * _EM_PER_UNIT[match.group(2)]) > MAX_EM


def _math_rule(*, display: bool, block: bool = False) -> Any:
    def render(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
        formula = math_html(tokens[idx].content, display)
        return f"<p>{formula}</p>\n" if block else formula

    return render


_BRACKETS = {"\\(": ("\\)", False), "\\[": ("\\]", True)}


def _bracket_math(state: StateInline, silent: bool) -> bool:
    """``\\(…\\)`` inline and ``\\[…\\]`` display math, anywhere in a paragraph."""
    opening = state.src[state.pos : state.pos + 2]
    if opening not in _BRACKETS:
        return False
    closing, display = _BRACKETS[opening]
    end = state.src.find(closing, state.pos + 2)
    if end == -1:
        return False
    body = state.src[state.pos + 2 : end]
    if not body.strip() or re.search(r"\n[ \t]*\n", body):
        return False
    if not silent:
        token = state.push("math_inline_double" if display else "math_inline", "math", 0)
        token.content = body
        token.markup = opening
    state.pos = end + 2
    return True
