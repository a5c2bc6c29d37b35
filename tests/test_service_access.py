"""The hub service's access table and its input checks, without a hub (fast tier).

``tests/test_hub_service.py`` proves the same rules end to end through a real hub; this
file pins the table itself so a change to one row is caught in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r3nb.engine.store.interface import ConversationAccess, Share
from r3nb.errors import BadRequest
from r3nb.service.access import _share, right
from r3nb.service.app import ConfigError, ServiceConfig
from r3nb.service.identity import Person, Visit

ALICE_S = ConversationAccess("alice", "alice/", (Share("group", "physics"), Share("user", "bob")))
BOBS_ON_ALICES = ConversationAccess("bob", "alice/lab", ())


def visit(name: str, server: str, *, groups: tuple[str, ...] = (), admin: bool = False) -> Visit:
    owner = server.split("/", 1)[0]
    return Visit(Person(name, frozenset(groups), admin), owner, server, "user")


@pytest.mark.parametrize(
    ("who", "access", "expected"),
    [
        (visit("alice", "alice/"), ALICE_S, "full"),  # the creator
        (visit("alice", "alice/"), BOBS_ON_ALICES, "full"),  # created through her server
        (visit("bob", "bob/"), ALICE_S, "read"),  # shared with him by name
        (visit("carol", "carol/", groups=("physics",)), ALICE_S, "read"),  # by group
        (visit("carol", "carol/"), ALICE_S, None),  # not shared
        (visit("carol", "alice/lab"), BOBS_ON_ALICES, "full"),  # a visitor of that server
        (visit("carol", "alice/"), BOBS_ON_ALICES, None),  # another server of alice's
        (visit("carol", "carol/", admin=True), ALICE_S, "full"),  # a hub admin
        (visit("alice", "alice/"), None, None),  # no owner row: admins only
        (visit("root", "root/", admin=True), None, "full"),
    ],
)
def test_who_may_do_what_with_a_conversation(
    who: Visit, access: ConversationAccess | None, expected: str | None
) -> None:
    assert right(who, access) == expected


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {},
        {"user": ""},
        {"user": 3},
        {"user": "a/b"},
        {"user": "x", "group": "y"},
        {"name": "bob"},
        {"user": "x" * 101},
    ],
)
def test_a_share_names_one_user_or_group(body: object) -> None:
    with pytest.raises(BadRequest):
        _share(body)


def test_a_share_body_becomes_a_share() -> None:
    assert _share({"group": "physics"}) == Share("group", "physics")
    assert _share({"user": "bob"}).as_json() == {"user": "bob"}


def test_the_service_refuses_to_start_without_a_token_or_with_unknown_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="JUPYTERHUB_API_TOKEN"):
        ServiceConfig.from_environment(None)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "t")
    config = tmp_path / "service.json"
    config.write_text(json.dumps({"db_path": ":memory:", "api_key": "oops"}))
    with pytest.raises(ConfigError, match="api_key"):
        ServiceConfig.from_environment(str(config))
    config.write_text(json.dumps({"db_path": ":memory:", "snapshot_interval": 0.5}))
    monkeypatch.setenv("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:12345")
    loaded = ServiceConfig.from_environment(str(config))
    assert (loaded.port, loaded.prefix, loaded.engine["snapshot_interval"]) == (
        12345,
        "/services/r3nb/",
        0.5,
    )


class _Stores:
    """What ``Guard`` reads: the engine's store's access rows (one conversation's)."""

    def __init__(self, cid: str, access: ConversationAccess) -> None:
        self.store = self
        self.rows = {cid: access}

    async def access_of(self, cids: list[str]) -> dict[str, ConversationAccess]:
        return {c: self.rows[c] for c in cids if c in self.rows}


async def test_an_attached_image_is_served_only_to_those_who_may_read_its_conversation() -> None:
    from r3nb.engine.api import Call
    from r3nb.engine.caller import Caller
    from r3nb.errors import NotFound
    from r3nb.service.access import Guard

    cid, aid = "0123456789abcdef", "fedcba9876543210"
    guard = Guard(_Stores(cid, ALICE_S))  # type: ignore[arg-type]
    call = Call("GET", f"conversations/{cid}/attachments/{aid}", {}, None, Caller("x", "user"))
    await guard.check(visit("alice", "alice/"), call)  # the owner
    await guard.check(visit("bob", "bob/"), call)  # shared with him to read
    with pytest.raises(NotFound):
        await guard.check(visit("carol", "carol/"), call)  # not shared
