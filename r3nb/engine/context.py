"""Fitting a conversation into a model's context window.

Sending the whole history every turn made a one-line question after a long reply cost
44,915 prompt tokens, and a long conversation eventually fails with the provider's
"context length exceeded". The newest turns that fit are sent; older ones are left out
and the reply's ``start`` event says how many, so the panel and ``%%chat`` can tell the
person. The system prompt and the new question are always sent.

A person can also mark a message (``PATCH conversations/{cid}/messages/{mid}``):
*pinned* messages are always sent, before any other earlier turn is considered, and
*excluded* ones never are (the engine drops them before fitting: they are not "left
out", so they do not count in ``left_out``). When the pinned messages alone do not fit,
they are sent anyway (the person asked for them) and ``over_budget`` says so, so the
panel can tell the person rather than the provider failing without a word.

Tokens are estimated (4 characters a token, plus a few per message): a tokenizer per
provider would cost more than the margin it saves, and the reserve for the reply keeps
the estimate on the safe side.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final

CHARS_PER_TOKEN = 4
PER_MESSAGE_TOKENS = 4
#: Room kept for the reply when the entry sets no ``max_tokens``: a quarter of the
#: window, at most this many tokens.
DEFAULT_REPLY_RESERVE = 4096

#: The key a model message carries its image rows' ids under until ``images.with_images``
#: turns them into content parts (after fitting, so a left-out turn loads no bytes), and
#: what one image costs in the estimate (a 1024×1024 image is ~765 tokens at OpenAI's
#: rates, ~1,600 at Anthropic's).
IMAGES_KEY: Final = "r3nb_images"
IMAGE_TOKENS = 1_600

PINNED: Final = "pinned"
EXCLUDED: Final = "excluded"
MARKS: frozenset[str] = frozenset({PINNED, EXCLUDED})


@dataclass(frozen=True)
class Fitted:
    messages: list[dict[str, Any]]
    left_out: int  # earlier turns not sent
    window: int | None  # the model's context window in tokens (None: unknown, all sent)
    over_budget: bool = False  # the pinned messages alone did not fit (all sent anyway)


def estimate_tokens(message: dict[str, Any]) -> int:
    images = len(message.get(IMAGES_KEY, ())) * IMAGE_TOKENS
    return len(str(message.get("content", ""))) // CHARS_PER_TOKEN + PER_MESSAGE_TOKENS + images


def fit(
    messages: list[dict[str, Any]],
    window: int | None,
    reply_tokens: int | None,
    pinned: Collection[int] = (),
) -> Fitted:
    """``messages``: an optional leading system message, earlier turns, the new prompt.
    ``pinned``: indexes (into ``messages``) of earlier turns that are always sent."""
    if not window or len(messages) < 2:
        return Fitted(messages, 0, window)
    head = messages[:1] if messages[0].get("role") == "system" else []
    turns, prompt = messages[len(head) : -1], messages[-1]
    fixed = {i - len(head) for i in pinned if len(head) <= i < len(messages) - 1}
    reserve = reply_tokens or min(DEFAULT_REPLY_RESERVE, window // 4)
    budget = window - reserve - sum(estimate_tokens(m) for m in [*head, prompt])
    budget -= sum(estimate_tokens(turns[i]) for i in fixed)
    over_budget = bool(fixed) and budget < 0
    recent: list[int] = []  # the newest unpinned turns that fit, newest first
    cut = False
    for i in range(len(turns) - 1, -1, -1):
        if i in fixed:
            continue
        cost = estimate_tokens(turns[i])
        if cost > budget:
            cut = True
            break
        budget -= cost
        recent.append(i)
    recent.reverse()
    # A reply whose question was cut confuses models: start the history on a user turn,
    # unless its question is pinned (a pinned reply stays: the person asked for it).
    while cut and recent and turns[recent[0]].get("role") != "user" and recent[0] - 1 not in fixed:
        recent.pop(0)
    kept = sorted(fixed.union(recent))
    return Fitted(
        [*head, *(turns[i] for i in kept), prompt], len(turns) - len(kept), window, over_budget
    )
