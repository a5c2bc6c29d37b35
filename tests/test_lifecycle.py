"""The lifecycle table (r3nb/engine/lifecycle.py): the states, the one way each can
change, and how a reply's ending is judged. The store applies the same rule in SQL
(tests/test_store_contract.py: the first end wins)."""

from __future__ import annotations

import itertools

import pytest

from r3nb.engine import lifecycle
from r3nb.engine.lifecycle import CANCELLED, COMPLETE, ERROR, STREAMING, can_end


def test_the_transition_table() -> None:
    states = [STREAMING, COMPLETE, ERROR, CANCELLED]
    allowed = {(a, b) for a, b in itertools.product(states, states) if can_end(a, b)}
    assert allowed == {(STREAMING, COMPLETE), (STREAMING, ERROR), (STREAMING, CANCELLED)}
    terminal = set(lifecycle.TERMINAL)
    assert terminal == {COMPLETE, ERROR, CANCELLED}
    assert not can_end("nonsense", COMPLETE)
    assert not can_end(STREAMING, "nonsense")


@pytest.mark.parametrize(
    ("length", "finish", "status", "note"),
    [
        (10, "stop", COMPLETE, None),
        (10, None, COMPLETE, None),
        (10, "length", COMPLETE, "cut at the model's output limit"),
        (10, "max_tokens", COMPLETE, "cut at the model's output limit"),
        (10, "content_filter", ERROR, "content filter"),
        (10, "SAFETY", ERROR, "safety filter"),
        (0, "stop", ERROR, "empty reply"),
        (0, None, ERROR, "empty reply"),
    ],
)
def test_how_an_ending_is_judged(
    length: int, finish: str | None, status: str, note: str | None
) -> None:
    got_status, got_note = lifecycle.ending(length, finish)
    assert got_status == status
    assert (got_note is None) if note is None else (note in (got_note or ""))


def test_an_interrupted_reply_is_cancelled_unless_aborted_with_a_reason() -> None:
    assert lifecycle.interrupted(None, None) == (CANCELLED, None)
    assert lifecycle.interrupted(None, "bob") == (CANCELLED, "stopped by bob")
    assert lifecycle.interrupted("timed out", "bob") == (ERROR, "timed out")
