"""``@name`` in a prompt: attach a compact, bounded description of a kernel variable.

The model gets enough to reason about the variable (type, shape, dtypes, first rows) and
never the whole thing: a 10-million-row DataFrame must not become a 10 MB prompt, and a
``repr`` must not take seconds. Nothing here imports pandas; objects are recognised by
what they offer (``shape``, ``dtypes``, ``head``).
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Container, Mapping
from typing import Any

#: ``@name`` not glued to a word, a dot, another ``@`` or a backtick (so ``a@b.com`` and
#: ``x@y`` are left alone).
_MENTION = re.compile(r"(?<![\w.@`])@([A-Za-z_]\w*)")
#: Code is the user's text, not a request for context (decorators, ``@`` in strings).
_CODE = re.compile(r"```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)|`[^`\n]*`", re.DOTALL)

MAX_REPR = 1_000
MAX_TABLE = 2_000
MAX_COMPLETIONS = 20


class ContextError(NameError):
    """A ``@name`` that names nothing in the kernel; raised before anything is sent."""


def mentions(prompt: str) -> list[str]:
    """Variable names mentioned as ``@name``, in order, each once."""
    text = _CODE.sub(" ", prompt)
    seen: dict[str, None] = {}
    for match in _MENTION.finditer(text):
        seen.setdefault(match.group(1), None)
    return list(seen)


def attachments_for(prompt: str, namespace: Mapping[str, Any]) -> list[dict[str, str]]:
    """``[{kind: "variable", name, summary}]`` for every ``@name`` in ``prompt``."""
    out = []
    for name in mentions(prompt):
        if name not in namespace:
            raise ContextError(f"@{name}: no variable named {name} in the kernel")
        out.append({"kind": "variable", "name": name, "summary": describe(name, namespace[name])})
    return out


def describe(name: str, value: Any) -> str:
    """One variable as the model will read it; starts with ``Variable `name```.

    An object that defines ``_repr_llm_()`` describes itself (the convention proposed for
    notebook assistants, like IPython's ``_repr_html_``); its text is bounded like a
    table's. One that fails, or answers something other than text, gets the usual
    description: a broken hook must not break the prompt."""
    kind = _type_name(value)
    own = _repr_llm(value)
    if own is not None:
        return _bounded(f"Variable `{name}`: {kind}\n{own}", MAX_TABLE + 400)
    try:
        if _is_table(value):
            return _bounded(f"Variable `{name}`: {kind}, {_table(value)}", MAX_TABLE + 400)
        if _is_array(value):
            return _bounded(
                f"Variable `{name}`: {kind}, shape {tuple(value.shape)}, dtype {value.dtype}\n"
                f"{_repr(value)}",
                MAX_REPR + 200,
            )
    except Exception as e:  # an odd object must not break the prompt
        return f"Variable `{name}`: {kind} (could not describe it: {type(e).__name__})"
    size = f", len {len(value)}" if isinstance(value, list | tuple | dict | set | str) else ""
    return f"Variable `{name}`: {kind}{size}\n{_repr(value)}"


def _repr_llm(value: Any) -> str | None:
    # Looked up on the type, as IPython looks up ``_repr_*_``: a class that defines it
    # for its instances must not be asked (unbound) for its own description.
    method = getattr(type(value), "_repr_llm_", None)
    if not callable(method):
        return None
    try:
        text = method(value)
    except Exception:
        return None
    return text if isinstance(text, str) else None


def completions(
    prefix: str, namespace: Mapping[str, Any], hidden: Container[str] = ()
) -> list[dict[str, str]]:
    """The person's variables whose names start with ``prefix`` (for ``@`` completion in
    the panel): ``[{name, type}]``, sorted, at most ``MAX_COMPLETIONS``. IPython's own
    names (``In``, ``Out``, ``exit``, ``_i3``) and private ones are left out; nothing is
    described here, so completing never runs an object's code."""
    # A copy first: a cell running on the main thread may add names meanwhile.
    items = sorted(
        (n, v)
        for n, v in list(namespace.items())
        if n.startswith(prefix) and not n.startswith("_") and n not in hidden and n.isidentifier()
    )
    return [{"name": n, "type": _type_name(v)} for n, v in items[:MAX_COMPLETIONS]]


def _type_name(value: Any) -> str:
    cls = type(value)
    module = cls.__module__.split(".")[0]
    return cls.__name__ if module == "builtins" else f"{module}.{cls.__name__}"


def _is_table(value: Any) -> bool:
    return all(hasattr(value, a) for a in ("shape", "head")) and (
        hasattr(value, "dtypes") or hasattr(value, "dtype")
    )


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _table(value: Any) -> str:
    """Shape, dtypes and ``head()`` as text: what a person would look at first."""
    parts = [f"shape {tuple(value.shape)}"]
    dtypes = getattr(value, "dtypes", None)
    if dtypes is not None and hasattr(dtypes, "items"):
        listed = [f"{col}: {dtype}" for col, dtype in list(dtypes.items())[:50]]
        more = len(dtypes) - len(listed)
        parts.append("dtypes: " + ", ".join(listed) + (f", … {more} more" if more > 0 else ""))
    else:
        parts.append(f"dtype: {value.dtype}")
    head = value.head(5)
    text = (
        head.to_string(max_cols=20, max_colwidth=60) if hasattr(head, "to_string") else repr(head)
    )
    parts.append("head():\n" + _bounded(text, MAX_TABLE))
    return "\n".join(parts)


_reprs = reprlib.Repr()
_reprs.maxstring = MAX_REPR
_reprs.maxother = MAX_REPR
_reprs.maxlist = _reprs.maxtuple = _reprs.maxset = _reprs.maxdict = 30
_reprs.maxlevel = 3


def _repr(value: Any) -> str:
    try:
        return _bounded(_reprs.repr(value), MAX_REPR)
    except Exception as e:
        return f"<repr failed: {type(e).__name__}>"


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
