"""Reply texts for the browser benchmark (served by ``python -m tests.provider
--text-file F``: a reply too long for a command-line argument)."""

from __future__ import annotations

from tests.provider import generated_word


def paragraphs(tokens: int, every: int = 60) -> str:
    """``tokens`` words like the generated replies, with a blank line every ``every``."""
    out = []
    for i in range(tokens):
        word = generated_word(i).rstrip()
        out.append(word + ("\n\n" if i % every == every - 1 else " "))
    return "".join(out)
