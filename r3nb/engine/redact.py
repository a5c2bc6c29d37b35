"""Keeping keys out of every text a person or a log sees.

Provider errors sometimes echo the request (headers, URLs with ``?key=``), so every
error text goes through ``redact`` before it is stored, shown or logged. Every key value
r3nb learns (configured, from the environment, from a key file) is remembered here, so
a key is removed whatever its shape or prefix; well-known key shapes are removed even
when r3nb never saw the key. Redaction happens before any cut to length, so a key that
straddles the cut cannot survive in part.
"""

from __future__ import annotations

import re
import threading

#: Shorter values would redact ordinary words ("none", "test"): a real key is longer.
_MIN_SECRET = 8
_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None

#: Key shapes of common providers (OpenAI/Anthropic ``sk-…``, Google ``AIza…``,
#: bearer tokens in echoed headers).
_SHAPES = re.compile(
    r"\bsk-[A-Za-z0-9_\-]{6,}"
    r"|\bAIza[0-9A-Za-z_\-]{20,}"
    r"|(?i:\bbearer\s+)[A-Za-z0-9_\-.=]{8,}"
)
REDACTED = "[redacted]"


def remember(secret: str) -> None:
    """Redact ``secret`` from every later text."""
    secret = secret.strip()
    if len(secret) < _MIN_SECRET:
        return
    global _pattern
    with _lock:
        if secret in _secrets:
            return
        _secrets.add(secret)
        # Longest first: a key that contains another is removed whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def redact(text: str) -> str:
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    return _SHAPES.sub(REDACTED, text)


def cut(text: str, limit: int = 240) -> str:
    """Redact, then shorten to ``limit`` characters (the order is the point)."""
    text = redact(text)
    return text[:limit] + ("…" if len(text) > limit else "")
