"""The store interface's "access" section (hub mode), on every backend of
``tests/test_store_contract.py``'s ``BACKENDS``: who owns a conversation, through which
hub server it was created, and whom it is shared with. The hub service's guard
(``r3nb/service/access.py``) relies on exactly this."""

from __future__ import annotations

import pytest

from r3nb.engine.store import StoreInterface
from r3nb.engine.store.interface import ConversationAccess, Share
from tests.test_store_contract import new_store, store  # noqa: F401  (the backends' fixtures)

BOB, PHYSICS = Share("user", "bob"), Share("group", "physics")


async def _owned(store: StoreInterface, owner: str = "alice", server: str = "alice/") -> str:  # noqa: F811
    cid = (await store.create_conversation("t", owner))["id"]
    await store.set_owner(cid, owner, server)
    return cid


async def test_a_new_conversation_has_its_owner_and_server_and_no_shares(
    store: StoreInterface,  # noqa: F811
) -> None:
    cid = await _owned(store, server="alice/lab")
    assert await store.access_of([cid, "0123456789abcdef"]) == {
        cid: ConversationAccess("alice", "alice/lab", ())
    }
    assert await store.access_of([]) == {}
    await store.set_owner(cid, "alice", "alice/")  # a second call replaces the row
    assert (await store.access_of([cid]))[cid].server == "alice/"


async def test_shares_are_added_once_sorted_and_revoked(store: StoreInterface) -> None:  # noqa: F811
    cid = await _owned(store)
    assert await store.add_share(cid, BOB, "alice") is True
    assert await store.add_share(cid, BOB, "alice") is False
    assert await store.add_share(cid, PHYSICS, "alice") is True
    assert await store.add_share(cid, Share("user", "Bob"), "alice") is True  # case-sensitive
    shares = (await store.access_of([cid]))[cid].shares
    assert shares == (PHYSICS, Share("user", "Bob"), BOB)
    assert await store.remove_share(cid, BOB) is True
    assert await store.remove_share(cid, BOB) is False
    assert (await store.access_of([cid]))[cid].shares == (PHYSICS, Share("user", "Bob"))


async def test_access_of_answers_a_batch_each_with_its_own_shares(
    store: StoreInterface,  # noqa: F811
) -> None:
    first, second = await _owned(store), await _owned(store, "bob", "bob/")
    unowned = (await store.create_conversation("no owner", None))["id"]
    await store.add_share(second, PHYSICS, "bob")
    found = await store.access_of([first, second, unowned])
    assert found == {
        first: ConversationAccess("alice", "alice/", ()),
        second: ConversationAccess("bob", "bob/", (PHYSICS,)),
    }


async def test_forget_access_removes_the_owner_and_every_share(
    store: StoreInterface,  # noqa: F811
) -> None:
    cid = await _owned(store)
    await store.add_share(cid, BOB, "alice")
    await store.forget_access(cid)
    await store.forget_access(cid)  # nothing happens the second time
    assert await store.access_of([cid]) == {}
    assert await store.add_share(cid, BOB, "alice") is True  # no leftover row


@pytest.mark.parametrize("kind", ["user", "group"])
def test_a_share_reads_back_as_its_json(kind: str) -> None:
    assert Share(kind, "x").as_json() == {kind: "x"}  # type: ignore[arg-type]
