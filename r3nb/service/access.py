"""What a person may do with a conversation in the service, decided before the engine runs.

The engine and its route table (``engine/api.py``) stay identity-free: this guard looks
at the route a call names, finds the conversation it touches (directly, or through a
message), and compares the conversation's recorded access with the ``Visit``:

- a hub admin, and the owner of the server a conversation was created through or its
  creator: **full** (everything, as on their own server today);
- a visitor of server O/S: **full** on the conversations created through O/S (what
  sharing the whole server gave before hub mode);
- a person or group it is shared with: **read** (open it, watch it live, Stop a reply);
- anyone else: it does not exist for them (404, so names of others' conversations do not
  leak).

Sharing itself (``conversations/{cid}/shares``) is decided here too: only the creator or
a hub admin shares or revokes.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from r3nb.engine.api import Call, JsonReply, Reply
from r3nb.engine.core import Engine
from r3nb.engine.store.interface import ConversationAccess, Share
from r3nb.errors import BadRequest, NotFound
from r3nb.protocol import ID_PATTERN

from .identity import Forbidden, Visit

Right = Literal["read", "full"]

_CONVERSATION = re.compile(r"^conversations/(?P<cid>[^/]+)(?P<rest>/.*)?$")
_MESSAGE = re.compile(r"^messages/(?P<mid>[^/]+)/(?P<action>stream|cancel)/?$")
_SHARES = re.compile(r"^conversations/(?P<cid>[^/]+)/shares/?$")
#: Hub user and group names: no slashes or control characters, bounded.
_NAME = re.compile(r"^[^/\s\x00-\x1f]{1,100}$")


def right(visit: Visit, access: ConversationAccess | None) -> Right | None:
    """The most ``visit.person`` may do with a conversation whose access is ``access``."""
    person = visit.person
    if person.admin:
        return "full"
    if access is None:  # created outside the service (no owner row): admins only
        return None
    if person.name in (access.owner, access.server.split("/", 1)[0]):
        return "full"
    if visit.visitor and access.server == visit.server:
        return "full"
    shared = {Share("user", person.name), *(Share("group", g) for g in person.groups)}
    return "read" if shared & set(access.shares) else None


class Guard:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.store = engine.store

    async def check(self, visit: Visit, call: Call) -> None:
        """Raise ``NotFound`` unless ``visit`` may make ``call``."""
        cid, needed = await self._target(call)
        if cid is None:
            return
        if not ID_PATTERN.match(cid):
            return  # the route itself answers 404 for a malformed id
        granted = right(visit, (await self.store.access_of([cid])).get(cid))
        if granted is None or (needed == "full" and granted != "full"):
            if granted == "read":
                raise Forbidden("this conversation is shared with you to read, not to change")
            raise NotFound(f"no conversation {cid[:40]!r}")

    async def _target(self, call: Call) -> tuple[str | None, Right]:
        match = _CONVERSATION.match(call.path)
        if match:
            reading = call.method == "GET"
            return match["cid"], "read" if reading else "full"
        match = _MESSAGE.match(call.path)
        if match and ID_PATTERN.match(match["mid"]):
            live = self.engine.hub.live.get(match["mid"])
            message = live.message if live else await self.store.get_message(match["mid"])
            if message is not None:
                return str(message["conversation_id"]), "read"
        return None, "read"

    async def after(self, visit: Visit, call: Call, reply: Reply) -> Reply:
        """Record and filter around the engine's answer: owners of new conversations,
        the list narrowed to what the person may see, access shown on a snapshot."""
        if not isinstance(reply, JsonReply) or reply.status >= 300:
            return reply
        body: Any = reply.body
        if call.method == "POST" and call.path.rstrip("/") == "conversations":
            await self.store.set_owner(body["conversation"]["id"], visit.person.name, visit.server)
        elif call.method == "GET" and call.path.rstrip("/") == "conversations":
            page = body["conversations"]
            access = await self.store.access_of([c["id"] for c in page])
            # A page may hold fewer than ``limit``: its cursor still leads on correctly.
            body["conversations"] = [c for c in page if right(visit, access.get(c["id"]))]
        elif call.method == "GET" and _CONVERSATION.match(call.path) and "conversation" in body:
            cid = body["conversation"]["id"]
            found = (await self.store.access_of([cid])).get(cid)
            body["access"] = found.as_json() if found else None
        elif call.method == "DELETE" and "deleted" in body and "conversation" not in body:
            await self.store.forget_access(str(body["deleted"]))
        return reply

    async def shares(self, visit: Visit, call: Call) -> JsonReply | None:
        """``GET|POST|DELETE conversations/{cid}/shares`` (None: not a shares route)."""
        match = _SHARES.match(call.path)
        if match is None:
            return None
        cid = match["cid"]
        await self.check(visit, Call("GET", f"conversations/{cid}", {}, None, call.caller))
        access = (await self.store.access_of([cid])).get(cid)
        if call.method == "GET":
            return JsonReply(access.as_json() if access else {"owner": None, "shares": []})
        if call.method not in ("POST", "DELETE"):
            raise BadRequest(f"{call.method} is not allowed on shares; use GET, POST or DELETE")
        if not visit.person.admin and (access is None or access.owner != visit.person.name):
            raise Forbidden("only the conversation's owner or a hub admin shares it")
        share = _share(call.body)
        if call.method == "POST":
            await self.store.add_share(cid, share, visit.person.name)
        else:
            await self.store.remove_share(cid, share)
        updated = (await self.store.access_of([cid])).get(cid)
        assert updated is not None
        return JsonReply(updated.as_json(), status=201 if call.method == "POST" else 200)


def _share(body: Any) -> Share:
    if not isinstance(body, dict) or len(body) != 1 or not ({"user", "group"} & body.keys()):
        raise BadRequest('give {"user": NAME} or {"group": NAME}')
    kind: Literal["user", "group"] = "user" if "user" in body else "group"
    name = body[kind]
    if not isinstance(name, str) or not _NAME.match(name):
        raise BadRequest(f"'{kind}' must be a hub {kind} name")
    return Share(kind, name)
