"""Which client a kernel uses: the server extension when it answers, else the engine
embedded in the kernel. The choice is made once and kept (one kernel, one store).

This is the only module that knows both transports, so neither imports the other:
``connect`` → ``embedded`` → ``client``, never back (``tests/test_wire_contract.py``
checks the import graph). Importing it is cheap: httpx, DuckDB and litellm load when
the client is first built.
"""

from __future__ import annotations

import logging
import threading

from r3nb.kernel.client import BaseClient, R3nbClientError, ServerClient
from r3nb.kernel.embedded import EmbeddedClient

log = logging.getLogger("r3nb.kernel")

_lock = threading.Lock()
_client: BaseClient | None = None


def get_client() -> BaseClient:
    """The client of this kernel, built on first use."""
    global _client
    with _lock:
        if _client is None:
            _client = connect()
        return _client


def connect() -> BaseClient:
    """A new client: ``ServerClient`` when ``R3NB_URL``/``R3NB_SECRET`` are set and the
    server answers ``GET health``; otherwise an ``EmbeddedClient``, saying why."""
    server = ServerClient.from_env()
    if server is not None:
        try:
            server.health()
            return server
        except R3nbClientError as e:
            log.warning(
                "r3nb: the server at %s is not usable (%s); running embedded", server.url, e
            )
            server.close()
    return EmbeddedClient()
