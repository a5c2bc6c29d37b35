"""r3nb: a streaming LLM chat panel for Jupyter notebooks.

This module imports nothing heavy (no litellm, no DuckDB, no widgets) so that
``%load_ext r3nb`` stays instant; everything is imported where it is used.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .server.app import R3nbApp

    return [{"module": "r3nb.server.app", "app": R3nbApp}]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext r3nb``: register the magics and say how to open the panel."""
    from .kernel.magics import load_ipython_extension as load

    load(ipython)


def __getattr__(name: str) -> Any:
    # Lazy public surface: r3nb.ChatPanel, r3nb.history, r3nb.export, r3nb.chat.
    if name in {"ChatPanel"}:
        from .kernel import panel

        return getattr(panel, name)
    if name in {"history", "export", "chat"}:
        from .kernel import api

        return getattr(api, name)
    raise AttributeError(f"module 'r3nb' has no attribute {name!r}")
