"""What a relay and the service agree on, importable without JupyterHub or the engine
(the single-user extension imports it in relay mode)."""

from __future__ import annotations

#: The visiting person's own hub token, sent by the relay beside its server token
#: (``Authorization: token …``). Absent on kernel calls: the service then acts as the
#: server's owner with ``source: "kernel"``.
PERSON_HEADER = "X-R3nb-Person-Token"

#: Where a relay finds the service when ``c.R3nbApp.service_url`` is not set (the
#: spawner sets it): the service's base URL, e.g. ``http://127.0.0.1:10101/services/r3nb/``.
ENV_SERVICE_URL = "R3NB_SERVICE_URL"

#: The API below the service's base URL (the same route table as the extension's).
API_PATH = "r3nb/api/"

#: What the relay says when the service cannot be reached (panel and %%chat show it).
UNAVAILABLE = "the r3nb service is unavailable"
