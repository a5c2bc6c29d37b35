"""A reply's lifecycle: its states, the one way each can change, and how a reply ends.

    streaming ──▶ complete    the provider finished (a cut at the output limit included)
        │    ├──▶ error       a fault, a filter, an empty reply, a timeout, a shutdown,
        │    │                or an abort with a reason (the row could not be stored, …)
        │    └──▶ cancelled   someone pressed Stop
        └── a terminal state never changes again: the first end wins.

Who applies it: ``StreamHub._run`` decides how a live reply ends (``ending``/
``interrupted``, below), ``LiveStream.abort`` is the one way to end it early with a
reason, the store writes an end only onto a ``streaming`` row (its SQL says ``WHERE
status = 'streaming'``: ``can_end`` in SQL), and the sweeper and start-up recovery end
rows no live task owns as ``error``. ``tests/test_lifecycle.py`` holds the table.
"""

from __future__ import annotations

from typing import Literal

Status = Literal["streaming", "complete", "error", "cancelled"]

STREAMING: Status = "streaming"
COMPLETE: Status = "complete"
ERROR: Status = "error"
CANCELLED: Status = "cancelled"

#: Every transition there is; anything else (an end after an end) is refused.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    STREAMING: frozenset({COMPLETE, ERROR, CANCELLED}),
    COMPLETE: frozenset(),
    ERROR: frozenset(),
    CANCELLED: frozenset(),
}
TERMINAL: frozenset[Status] = frozenset(s for s, ends in TRANSITIONS.items() if not ends)


def can_end(current: str, new: str) -> bool:
    """Whether a message in ``current`` may become ``new``."""
    return new in TRANSITIONS.get(current, frozenset())  # type: ignore[call-overload]


#: Finish reasons that mean the provider withheld (part of) the reply.
_WITHHELD = {
    "content_filter": "the provider stopped the reply (content filter)",
    "safety": "the provider stopped the reply (safety filter)",
    "recitation": "the provider stopped the reply (recitation filter)",
    "refusal": "the model refused to answer",
}

#: Finish reasons of a reply cut at the output-token limit (litellm maps Anthropic's
#: ``max_tokens``, Gemini's ``MAX_TOKENS`` and Ollama's ``length`` to ``length``).
_CUT = {"length", "max_tokens"}
_CUT_NOTE = (
    "the reply was cut at the model's output limit (finish_reason: {finish_reason}); "
    "ask it to continue, or raise the model's max_tokens"
)


def ending(length: int, finish_reason: str | None) -> tuple[Status, str | None]:
    """The status and note of a reply whose stream ended without a fault.

    A reply a provider filtered, or one with no text at all, is not ``complete``: a
    person must see why it stopped (in the panel, ``%%chat`` and the DB), not an empty
    or silently cut bubble that looks like an answer."""
    withheld = _WITHHELD.get((finish_reason or "").lower())
    if withheld:
        return ERROR, f"{withheld}; finish_reason: {finish_reason}"
    if length == 0:
        return ERROR, "the model sent an empty reply" + (
            f" (finish_reason: {finish_reason})" if finish_reason else ""
        )
    if (finish_reason or "").lower() in _CUT:
        # Complete, not error: the text is good as far as it goes and stays in the
        # conversation, so "continue" works; the note says why it stops mid-thought.
        return COMPLETE, _CUT_NOTE.format(finish_reason=finish_reason)
    return COMPLETE, None


def interrupted(end_reason: str | None, cancelled_by: str | None) -> tuple[Status, str | None]:
    """How a reply whose task was cancelled ends: ``error`` when it was aborted with a
    reason (timeout, shutdown, a failed write), else ``cancelled`` (Stop), naming who
    stopped it when known."""
    if end_reason:
        return ERROR, end_reason
    return CANCELLED, f"stopped by {cancelled_by}" if cancelled_by else None
