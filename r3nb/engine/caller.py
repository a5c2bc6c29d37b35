"""Who is calling: the identity every engine operation acts for.

Its own module because the engine's collaborators (admission, model access, the
exchange) all need it, and none of them should import the ``Engine`` that wires them.
"""

from __future__ import annotations

from dataclasses import dataclass

from r3nb.protocol import Source


@dataclass(frozen=True)
class Caller:
    """Who is calling, as the transport authenticated them (never from a request body)."""

    name: str
    source: Source  # "user" (browser or API client), "kernel" (kernel secret), "embedded"
    is_admin: bool = False  # may see everyone's usage, use every model
    groups: frozenset[str] = frozenset()  # JupyterHub groups (hub mode), for model_groups
