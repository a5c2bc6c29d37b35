"""``@name`` as the kernel describes it (r3nb/kernel/context.py, r3nb/kernel/panel.py):
objects that define ``_repr_llm_()`` describe themselves, bounded like the rest; a broken
hook falls back to the usual description; completion lists the person's variables only;
the panel's comm question is answered with attachments, or with a sentence for an unknown
name. The browser half is tests/test_browser_context.py."""

from __future__ import annotations

from typing import Any

from r3nb.kernel.context import MAX_TABLE, completions, describe
from r3nb.kernel.panel import answer_context


class Described:
    def _repr_llm_(self) -> str:
        return "a model of the sky, 3 layers"


class Huge:
    def _repr_llm_(self) -> str:
        return "x" * 100_000


class Broken:
    def _repr_llm_(self) -> str:
        raise RuntimeError("nope")

    def __repr__(self) -> str:
        return "<Broken>"


def test_an_object_with_repr_llm_describes_itself_within_the_bound() -> None:
    module = Described.__module__.split(".")[0]
    assert describe("sky", Described()) == (
        f"Variable `sky`: {module}.Described\na model of the sky, 3 layers"
    )
    assert len(describe("huge", Huge())) <= MAX_TABLE + 400
    # The class itself is not an instance: it is not asked (unbound) for a description.
    assert "a model of the sky" not in describe("cls", Described)


def test_a_failing_repr_llm_falls_back_to_the_bounded_repr() -> None:
    text = describe("b", Broken())
    assert text.endswith("\n<Broken>")


def test_completion_lists_the_persons_variables_not_ipythons_or_private_ones() -> None:
    ns: dict[str, Any] = {"df": 1, "df2": "x", "_df": 2, "In": [], "data": 3, "dfx": None}
    assert completions("df", ns, hidden={"In"}) == [
        {"name": "df", "type": "int"},
        {"name": "df2", "type": "str"},
        {"name": "dfx", "type": "NoneType"},
    ]
    assert [c["name"] for c in completions("", ns, hidden={"In"})] == ["data", "df", "df2", "dfx"]


def test_the_panels_question_gets_attachments_or_the_unknown_name() -> None:
    # No IPython shell here: an empty namespace, so any name is unknown.
    reply = answer_context({"type": "context", "id": "q1", "op": "resolve", "prompt": "@ghost?"})
    assert reply == {
        "type": "context-reply",
        "id": "q1",
        "ok": False,
        "error": "@ghost: no variable named ghost in the kernel",
    }
    plain = answer_context({"type": "context", "id": "q2", "op": "resolve", "prompt": "`@x` no"})
    assert plain == {"type": "context-reply", "id": "q2", "ok": True, "attachments": []}
