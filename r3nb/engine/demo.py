"""The offline demo model's replies: deterministic, useful, no network.

Pure text generation; ``provider.py`` wraps it as a litellm CustomLLM so that the demo
runs through exactly the same streaming path as a real provider.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_TOPICS: list[tuple[tuple[str, ...], str]] = [
    (
        ("stream", "live", "token", "snapshot", "observer"),
        "**How streaming works in r3nb.** The Jupyter server calls the provider through "
        "litellm and keeps the growing reply in memory. The panel that sent the prompt "
        "follows it live, token by token. Other notebooks showing the same conversation "
        "see a snapshot every couple of seconds with an *AI is responding…* label, and "
        "the partial text is written to DuckDB on that cadence, never per token.",
    ),
    (
        ("stop", "cancel", "interrupt"),
        "**Stopping a reply.** Press *Stop* in the panel, or interrupt a `%%chat` cell. "
        "The server cancels the provider call and keeps the text received so far, with "
        "status `cancelled`. Stop goes straight to the server, so it works even while "
        "your kernel is busy running another cell.",
    ),
    (
        ("config", "provider", "openai", "anthropic", "ollama", "key", "model"),
        "**Using a real model.** Add models to `jupyter_server_config.py`:\n\n"
        "```python\n"
        "c.R3nbApp.models = {\n"
        '    "gpt": {"model": "openai/gpt-4o-mini", "api_key_env": "OPENAI_API_KEY"},\n'
        '    "claude": {"model": "anthropic/claude-haiku-4-5",\n'
        '               "api_key_file": "~/.config/r3nb/anthropic.key"},\n'
        '    "local": {"model": "ollama/llama3.2", "api_base": "http://127.0.0.1:11434"},\n'
        "}\n"
        'c.R3nbApp.default_model = "gpt"\n'
        "```\n\n"
        "The server keeps keys out of the kernels' environment; `api_key_file` keeps "
        "them out of every process environment.",
    ),
    (
        ("dataframe", "@", "variable", "context"),
        "**Notebook context.** Write `@name` in a prompt to attach a compact description "
        "of the kernel variable `name`: for a DataFrame its shape, dtypes and first rows.",
    ),
    (
        ("history", "export", "duckdb", "persist", "saved"),
        "**Your conversations are kept.** Every message lives in a DuckDB file beside "
        "Jupyter's data. `r3nb.history()` returns them as a DataFrame and "
        "`r3nb.export(conversation_id, 'markdown')` gives a transcript to keep.",
    ),
]

_INTRO = (
    "I am r3nb's **offline demo model**: I run wherever r3nb runs (the Jupyter server, "
    "or your kernel when no r3nb server is reachable), need no API key and no network, "
    "and stream my answer word by word like a real provider."
)

_ATTACHMENT = re.compile(r"^Variable `(?P<name>[^`]+)`(?P<rest>[^\n]*)", re.MULTILINE)


def demo_reply(messages: list[dict[str, object]]) -> str:
    """A reply built from the last user message (and any attached variables)."""
    prompt = ""
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            prompt = content if isinstance(content, str) else str(content)
            break
    lowered = prompt.lower()
    parts = [_INTRO]
    for match in _ATTACHMENT.finditer(prompt):
        parts.append(
            f"You attached the variable `{match.group('name')}`{match.group('rest')}. "
            "A real model would now reason about its values; I can tell you it arrived."
        )
    picked = [text for keys, text in _TOPICS if any(k in lowered for k in keys)]
    parts.extend(picked[:2] or [text for _, text in _TOPICS[:1]])
    question = prompt.strip().splitlines()[0][:200] if prompt.strip() else ""
    if question:
        parts.append(f"You asked: *{_escape(question)}*")
    parts.append("Configure a real provider to get real answers (ask me about *config*).")
    return "\n\n".join(parts)


def _escape(text: str) -> str:
    return re.sub(r"([*_`\[\]<>])", r"\\\1", text)


def word_chunks(text: str) -> Iterator[str]:
    """Split into word-sized pieces that join back to exactly ``text``."""
    yield from re.findall(r"\S+\s*|\s+", text)
