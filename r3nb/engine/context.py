"""Fitting a conversation into a model's context window.

Sending the whole history every turn made a one-line question after a long reply cost
44,915 prompt tokens, and a long conversation eventually fails with the provider's
"context length exceeded". The newest turns that fit are sent; older ones are left out
and the reply's ``start`` event says how many, so the panel and ``%%chat`` can tell the
person. The system prompt and the new question are always sent.

Tokens are estimated (4 characters a token, plus a few per message): a tokenizer per
provider would cost more than the margin it saves, and the reserve for the reply keeps
the estimate on the safe side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CHARS_PER_TOKEN = 4
PER_MESSAGE_TOKENS = 4
#: Room kept for the reply when the entry sets no ``max_tokens``: a quarter of the
#: window, at most this many tokens.
DEFAULT_REPLY_RESERVE = 4096


@dataclass(frozen=True)
class Fitted:
    messages: list[dict[str, Any]]
    left_out: int  # earlier turns not sent
    window: int | None  # the model's context window in tokens (None: unknown, all sent)


def estimate_tokens(message: dict[str, Any]) -> int:
    return len(str(message.get("content", ""))) // CHARS_PER_TOKEN + PER_MESSAGE_TOKENS


def fit(messages: list[dict[str, Any]], window: int | None, reply_tokens: int | None) -> Fitted:
    """``messages``: an optional leading system message, earlier turns, the new prompt."""
    if not window or len(messages) < 2:
        return Fitted(messages, 0, window)
    head = messages[:1] if messages[0].get("role") == "system" else []
    turns, prompt = messages[len(head) : -1], messages[-1]
    reserve = reply_tokens or min(DEFAULT_REPLY_RESERVE, window // 4)
    budget = window - reserve - sum(estimate_tokens(m) for m in [*head, prompt])
    kept: list[dict[str, Any]] = []
    for message in reversed(turns):
        cost = estimate_tokens(message)
        if cost > budget:
            break
        budget -= cost
        kept.append(message)
    kept.reverse()
    # A reply without its question confuses models: start the history on a user turn.
    while kept and kept[0].get("role") != "user":
        kept.pop(0)
    return Fitted([*head, *kept, prompt], len(turns) - len(kept), window)
