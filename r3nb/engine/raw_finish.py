"""What a provider itself said about the end of a stream, where litellm's parsers lose it.

litellm 1.110's parsers lose what some providers say about a stream's end:

- **Gemini**: every chunk without a ``finishReason`` gets ``finish_reason: "stop"``, so a
  stream cut after 6 of 24 words looked finished and was stored ``complete``.
- **Ollama's ``/api/generate``** (``ollama/``): the last chunk's ``done_reason`` is read as
  ``"stop"`` whatever it says, so a reply cut at the token limit (``"length"``) looked
  whole.
- **Ollama's errors** (``ollama_chat/`` and ``ollama/``): a failure mid-stream is a
  line ``{"error": "…"}`` (or, from proxies, ``"done_reason": "error"`` with an
  ``error``). litellm's chat parser never reads it (the reply was stored ``complete``,
  cut, or a 400 naming a ``KeyError``), and its generate parser raises a bare exception
  holding the chunk's Python repr (shown as "cannot reach Ollama" or a dict).

The raw chunks still say it. ``watch(litellm)`` wraps those parsers once to note, in
a context variable of the stream being read (litellm parses in the reader's task), the
raw finish they saw; ``expect(model)`` sets up that note for one stream and
``RawFinish.judge`` turns it into the finish reason r3nb stores. A litellm without those
parsers is taken at its word (``watch`` returns what it could wrap).

Only ``worker_litellm`` (the one module importing litellm) calls ``watch``.
"""

from __future__ import annotations

import contextvars
import importlib
from collections.abc import Callable
from typing import Any


class RawFinish:
    """The raw finish one stream's chunks carried (``reason`` None: none yet), and the
    provider's own error words when a chunk carried some."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.reason: str | None = None
        self.error: str | None = None

    def failure(self, who: str, *, mid_reply: bool) -> str | None:
        """The reason to store when the provider said, in the stream, that it failed."""
        if self.error is None and self.reason != "error":
            return None
        words = self.error or "done_reason: error"
        return f"{who} reported an error{' mid-reply' if mid_reply else ''}: {words}"

    def judge(self, finish: str | None) -> str | None:
        """The finish to store, given litellm's; None means the stream ended early."""
        if self.dialect == "gemini" and self.reason is None:
            return None
        if self.dialect == "ollama" and self.reason == "length":
            return "length"
        return finish


_current: contextvars.ContextVar[RawFinish | None] = contextvars.ContextVar(
    "r3nb_raw_finish", default=None
)
_watched: set[str] = set()


def expect(litellm_model: str) -> RawFinish | None:
    """Note the raw finish of the stream this task is about to read, when its dialect's
    parser is watched; None otherwise (litellm's finish then stands)."""
    dialect = litellm_model.split("/", 1)[0]
    raw = RawFinish(dialect) if dialect in _watched else None
    _current.set(raw)
    return raw


def _gemini_reason(chunk: dict[str, Any], raw: RawFinish) -> None:
    candidates = chunk.get("candidates")
    if isinstance(candidates, list):
        for candidate in candidates:
            if isinstance(candidate, dict) and candidate.get("finishReason"):
                raw.reason = str(candidate["finishReason"])


def _ollama_reason(chunk: dict[str, Any], raw: RawFinish) -> None:
    error = chunk.get("error")
    if error:
        raw.error = str(error)
    if chunk.get("done") is True:
        raw.reason = str(chunk.get("done_reason") or "stop")


def _wrap(iterator: Any, read: Callable[[dict[str, Any], RawFinish], None]) -> bool:
    original = getattr(iterator, "chunk_parser", None)
    if original is None:
        return False
    if getattr(original, "r3nb_watched", False):
        return True

    def chunk_parser(self: Any, chunk: Any) -> Any:
        raw = _current.get()
        if raw is not None and isinstance(chunk, dict):
            read(chunk, raw)  # before litellm's parser, which may raise on this chunk
        return original(self, chunk)

    chunk_parser.r3nb_watched = True  # type: ignore[attr-defined]
    iterator.chunk_parser = chunk_parser
    return True


#: The parsers watched: dialect, module, iterator class, what to read from a raw chunk.
_PARSERS = (
    ("gemini", "litellm.llms.vertex_ai.gemini.vertex_and_google_ai_studio_gemini",
     "ModelResponseIterator", _gemini_reason),
    ("ollama", "litellm.llms.ollama.completion.transformation",
     "OllamaTextCompletionResponseIterator", _ollama_reason),
    ("ollama_chat", "litellm.llms.ollama.chat.transformation",
     "OllamaChatCompletionResponseIterator", _ollama_reason),
)  # fmt: skip


def watch() -> set[str]:
    """Wrap the parsers this litellm has (idempotent); the dialects now watched."""
    for dialect, module_name, class_name, read in _PARSERS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if _wrap(getattr(module, class_name, None), read):
            _watched.add(dialect)
    return set(_watched)
