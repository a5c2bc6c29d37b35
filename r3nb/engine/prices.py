"""Model prices and context windows from litellm's bundled price list, without litellm.

``import litellm`` takes seconds (4-9 s measured on two busy cores) and the server starts
it in the background. Before this module, a reply that finished in that window waited
for the import to compute its cost: a lean-path first reply took 4.8-6.7 s to ``done``
(0.42 s warm). The price list is a JSON file inside the litellm package; reading it
needs no import of litellm. Parsing all of it (3.4 MB) would hold the GIL for 50-135 ms,
a stall of the server's loop, so only the one entry asked for is decoded: its key is
found as text (one line per top-level key, four spaces in) and ``raw_decode`` reads the
object that follows.

Once litellm is loaded, ``provider`` asks litellm itself (it knows tiered prices and
aliases); this is the answer until then, for the plain per-token prices.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

_FILE = "model_prices_and_context_window_backup.json"
_DECODER = json.JSONDecoder()


@functools.cache
def _text() -> str:
    """The price list as text, read once ("" when litellm or the file is missing)."""
    spec = importlib.util.find_spec("litellm")  # locates the package, imports nothing
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / _FILE
        if path.is_file():
            return path.read_text(encoding="utf-8")
    return ""


def entry(model: str) -> dict[str, Any] | None:
    """The price-list entry of ``model`` (``provider/name`` or ``name``), or None."""
    found = _entries.get(model, ...)
    if found is ...:
        found = _entries[model] = _entry(model)
    return dict(found) if found is not None else None


#: Entries looked up so far, by name (a server knows a handful of models).
_entries: dict[str, dict[str, Any] | None] = {}


def known(model: str) -> bool:
    """Whether ``model``'s entry was looked up already: ``cost`` is then a dict lookup,
    cheaper on the loop than a hop to a thread."""
    return model in _entries


def _entry(model: str) -> dict[str, Any] | None:
    """Finding a key in 3.4 MB of text takes 1.5-3.4 ms (measured), and every send asks
    for its model's context window on the server's loop: ``entry`` keeps the answer."""
    text = _text()
    for key in dict.fromkeys((model, model.split("/", 1)[-1])):
        at = text.find(f"\n    {json.dumps(key)}: {{")
        if at < 0:
            continue
        start = text.index("{", at)
        try:
            value, _ = _DECODER.raw_decode(text, start)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None
    return None


def cost(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """Plain per-token cost, or None when the model has no price (unknown, not zero)."""
    info = entry(model)
    if info is None:
        return None
    per_in = info.get("input_cost_per_token")
    per_out = info.get("output_cost_per_token")
    if not isinstance(per_in, int | float) or not isinstance(per_out, int | float):
        return None
    return float(prompt_tokens * per_in + completion_tokens * per_out)


def context_window(model: str) -> int | None:
    info = entry(model) or {}
    window = info.get("max_input_tokens") or info.get("max_tokens")
    return int(window) if isinstance(window, int | float) and window > 0 else None
