"""The Python API for notebooks and scripts: ``r3nb.history()``, ``r3nb.export()``,
``r3nb.chat()``. Same client as the magics, so the same store and the same rules."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Literal

from .client import R3nbClientError, conversation_or_latest, kernel_id
from .connect import get_client

__all__ = ["chat", "export", "history"]

_COLUMNS = [
    "seq", "role", "content", "status", "model", "author", "source", "error",
    "prompt_tokens", "completion_tokens", "cost", "created_at", "updated_at", "id",
]  # fmt: skip


def _messages(conversation: str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The conversation and its current branch (what the panel shows), in order."""
    client = get_client()
    cid = conversation_or_latest(client, conversation, create=False, remember=False)
    snap = client.snapshot(cid)
    return snap["conversation"], sorted(snap["messages"], key=lambda m: m["seq"])


def history(conversation: str | None = None) -> Any:
    """The messages of a conversation (the current or most recent one by default; its
    current branch: regenerated and edited versions it moved away from are left out) as
    a pandas DataFrame, one row per message, timestamps as UTC datetimes."""
    import pandas as pd

    _, messages = _messages(conversation)
    frame = pd.DataFrame([{c: m.get(c) for c in _COLUMNS} for m in messages], columns=_COLUMNS)
    for column in ("created_at", "updated_at"):
        frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
    frame["attachments"] = [[a["name"] for a in m.get("attachments") or []] for m in messages]
    return frame


class Transcript(str):
    """The text ``export()`` returns: a plain ``str`` everywhere, shown in a notebook as
    escaped preformatted HTML. As ``text/plain`` it would be autolinked by JupyterLab,
    which turns ``data:`` and any ``scheme://`` in a text output into a live link."""

    __slots__ = ()

    def _repr_html_(self) -> str:
        from .render import preformatted_html

        return preformatted_html(self)


def export(
    conversation: str | None = None, format: Literal["markdown", "json"] = "markdown"
) -> str:
    """A transcript to keep: Markdown for people, JSON (the API's own shapes) for tools.
    Displayed in a notebook, it shows as text (the replies in it are untrusted)."""
    meta, messages = _messages(conversation)
    if format == "json":
        return Transcript(json.dumps({"conversation": meta, "messages": messages}, indent=2,
                                     ensure_ascii=False))  # fmt: skip
    if format != "markdown":
        raise ValueError(f"format must be 'markdown' or 'json', not {format!r}")
    lines = [f"# {meta['title']}", "", f"*Conversation {meta['id']}, {_when(meta['created_at'])}*"]
    for m in messages:
        who = m["role"].capitalize()
        if m["role"] == "assistant":
            who += f" ({m.get('model') or '?'})"
        elif m.get("author"):
            who += f" ({m['author']})"
        # Only the current branch is exported; other versions of a message are noted.
        siblings = m.get("siblings") or []
        version = f" · version {siblings.index(m['id']) + 1} of {len(siblings)}" if siblings else ""
        lines += ["", f"## {who} · {_when(m['created_at'])}{version}", "",
                  m["content"] or "*(no text)*"]  # fmt: skip
        for a in m.get("attachments") or []:
            lines += ["", f"<details><summary>@{a['name']}</summary>", "", "```text",
                      a["summary"], "```", "", "</details>"]  # fmt: skip
        if m["status"] != "complete":
            reason = f": {m['error']}" if m.get("error") else ""
            lines += ["", f"*[{m['status']}{reason}]*"]
    return Transcript("\n".join(lines) + "\n")


def chat(prompt: str, model: str | None = None, conversation: str | None = None) -> str:
    """Ask and wait; returns the reply's text. ``@name`` attaches a variable of the
    running IPython session. A cancelled reply returns its partial text; a failed one
    raises ``R3nbClientError`` with the reason."""
    from .context import attachments_for

    attachments = attachments_for(prompt, _user_namespace())
    client = get_client()
    cid = conversation_or_latest(client, conversation)
    final = client.send(cid, prompt, model, kernel_id(), attachments)
    if final["status"] == "error":
        raise R3nbClientError(0, f"the reply failed: {final.get('error')}")
    return str(final["content"])


def _user_namespace() -> dict[str, Any]:
    try:
        from IPython import get_ipython
    except ImportError:
        return {}
    shell = get_ipython()
    return shell.user_ns if shell is not None else {}


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
