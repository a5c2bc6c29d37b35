"""Who is calling the service, from the two hub tokens a relay sends (DESIGN "Service rule").

The relay token is a single-user server's own token (``JUPYTERHUB_API_TOKEN``): it must
carry ``access:services!service=<this service>`` and name exactly one server with
``access:servers!server=O/S``, owned by the token's user O. The person token is the
visitor's own OAuth token to that server (or their API token): it must grant access to
that server (``access:servers!server=O/S``, ``!user=O`` or unfiltered). Both are
resolved with ``HubAuth.user_for_token`` (cached for ``cache_max_age``, so a hub restart
does not interrupt people already seen). While the hub cannot be reached (restarting),
a token the hub vouched for within ``STALE_GRACE`` keeps its last answer even after
that cache expired; a token never seen gets 503 "cannot verify identity", never a guess.
Headers that claim a name are never read: a name comes only from the hub's answer about
a token.

Why both tokens: the person token alone cannot be sent here by anyone but its holder's
server chain (it lacks the service scope), and the server token alone only speaks for
its owner's kernels. No token is exchanged or widened.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from jupyterhub.services.auth import HubAuth
from tornado import web

from r3nb.errors import R3nbError

log = logging.getLogger("r3nb.service")

SERVER_SCOPE = "access:servers!server="
USER_SCOPE = "access:servers!user="
#: How long the hub's last answer about a token stands in while the hub is unreachable.
STALE_GRACE = 3600.0
#: Tokens whose last answer is kept for that (the least recently used go first).
STALE_KEPT = 20_000
#: What a 503 for an unverifiable token suggests (a hub restart takes seconds).
HUB_RETRY_SECONDS = 5


class Unauthenticated(R3nbError):
    status = 401


class Forbidden(R3nbError):
    status = 403


class HubUnavailable(R3nbError):
    status = 503

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.retry_in(HUB_RETRY_SECONDS)


@dataclass(frozen=True)
class Person:
    name: str
    groups: frozenset[str]
    admin: bool


@dataclass(frozen=True)
class Visit:
    """A request as the service sees it: ``person`` acting through ``owner``'s server
    ``server`` ("O/S"), as a person in the panel or as the owner's kernel."""

    person: Person
    owner: str
    server: str
    source: Literal["user", "kernel"]

    @property
    def visitor(self) -> bool:
        return self.person.name != self.owner


class Identities:
    """Turns a relay's token pair into a ``Visit`` (or 401/403)."""

    def __init__(self, hub_auth: HubAuth, service_name: str) -> None:
        self.hub_auth = hub_auth
        self.service_scope = f"access:services!service={service_name}"
        #: sha256(token) → (the hub's last answer, when): used only while it is away.
        self._last: OrderedDict[str, tuple[dict[str, Any], float]] = OrderedDict()

    async def visit(self, relay_token: str | None, person_token: str | None) -> Visit:
        if not relay_token:
            raise Unauthenticated("r3nb service: no server token (call through your server)")
        relay = await self._model(relay_token)
        if relay is None or relay.get("kind", "user") != "user":
            raise Forbidden("r3nb service: the server token is not valid")
        scopes = set(relay.get("scopes") or ())
        if self.service_scope not in scopes and "access:services" not in scopes:
            raise Forbidden(f"r3nb service: the server token lacks {self.service_scope}")
        servers = sorted(s.removeprefix(SERVER_SCOPE) for s in scopes if s.startswith(SERVER_SCOPE))
        if len(servers) != 1 or servers[0].split("/", 1)[0] != relay["name"]:
            raise Forbidden("r3nb service: the token is not a single-user server's own token")
        server = servers[0]
        owner = str(relay["name"])
        if not person_token:
            return Visit(_person(relay), owner, server, "kernel")
        model = await self._model(person_token)
        if model is None or model.get("kind", "user") != "user":
            raise Forbidden("r3nb service: the person's token is not valid")
        granted = set(model.get("scopes") or ())
        if not granted & {SERVER_SCOPE + server, USER_SCOPE + owner, "access:servers"}:
            raise Forbidden(f"r3nb service: the person's token gives no access to {server}")
        return Visit(_person(model), owner, server, "user")

    async def _model(self, token: str) -> dict[str, Any] | None:
        key = hashlib.sha256(token.encode("utf8", "replace")).hexdigest()
        try:
            model = await self.hub_auth.user_for_token(token, sync=False)
        except web.HTTPError as e:  # the hub is down or refused us: HubAuth's cache missed
            last = self._last.get(key)
            if last is not None and time.monotonic() - last[1] < STALE_GRACE:
                return last[0]
            log.warning("cannot verify a token: the hub did not answer (%s)", e.status_code)
            raise HubUnavailable(
                "r3nb service: cannot verify identity: the hub is not answering (restarting?);"
                " people it already knows keep working, try again in a few seconds"
            ) from e
        if not (isinstance(model, dict) and model.get("name")):
            self._last.pop(key, None)
            return None
        self._last[key] = (model, time.monotonic())
        self._last.move_to_end(key)
        while len(self._last) > STALE_KEPT:
            self._last.popitem(last=False)
        return model


def _person(model: dict[str, Any]) -> Person:
    return Person(
        name=str(model["name"]),
        groups=frozenset(str(g) for g in model.get("groups") or ()),
        admin=bool(model.get("admin")),
    )
