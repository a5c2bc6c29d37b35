"""Per-person limits: a token bucket for requests and a cap on concurrent streams.

Keyed by the authenticated person (the server's identity of the caller), so on a
shared JupyterHub server every collaborator gets an allowance of their own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from r3nb.errors import PayloadTooLarge, RateLimited


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``per_minute`` requests, bursting up to the same number; 0 disables it."""

    def __init__(self, per_minute: float, what: str = "messages") -> None:
        self.per_minute = per_minute
        self.what = what
        self._buckets: dict[str, _Bucket] = {}

    def check(self, who: str) -> None:
        """Take one token or raise ``RateLimited`` saying when the next one comes."""
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        rate = self.per_minute / 60.0
        bucket = self._buckets.get(who)
        if bucket is None:
            bucket = self._buckets[who] = _Bucket(float(self.per_minute), now)
        bucket.tokens = min(float(self.per_minute), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens < 1.0:
            wait = (1.0 - bucket.tokens) / rate
            raise RateLimited(
                f"rate limit: at most {self.per_minute:g} {self.what} a minute per person; "
                f"retry in {wait:.0f} s",
                retry_after=wait,
            )
        bucket.tokens -= 1.0


def check_prompt_size(chars: int, max_chars: int) -> None:
    """``chars`` counts the prompt plus any attached notebook context."""
    if max_chars > 0 and chars > max_chars:
        raise PayloadTooLarge(
            f"the prompt has {chars:,} characters; the limit is {max_chars:,} "
            "(c.R3nbApp.max_prompt_chars)"
        )


def check_concurrent(active: int, cap: int) -> None:
    if cap > 0 and active >= cap:
        raise RateLimited(
            f"you already have {active} replies streaming (limit {cap}); wait for one to "
            "finish or stop it",
            retry_after=2,
        )
