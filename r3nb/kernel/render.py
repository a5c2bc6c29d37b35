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
- math stays text: MathJax is told to skip the output (its ``\\href`` and friends are not
  ours to vet).

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

from markdown_it import MarkdownIt
from markdown_it.token import Token

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
    return _renderer().render(text)


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
