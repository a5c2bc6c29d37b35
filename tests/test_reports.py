"""Admins' reports: usage per person, model and UTC day (JSON and CSV), and the audit
trail of who sent what to which model — on every store backend, and over HTTP."""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
from typing import Any

import pytest

from r3nb.engine import reports
from r3nb.engine.store import Final, NewMessage, StoreInterface
from r3nb.errors import BadRequest
from tests.client import Api
from tests.test_store_contract import new_store, store  # noqa: F401 (fixtures: every backend)


async def _exchange(
    db: StoreInterface, cid: str, who: str | None, model: str | None, prompt: str,
    tokens: tuple[int, int] | None = None, cost: float | None = None,
) -> str:  # fmt: skip
    _prompt, reply = await db.add_messages(cid, [
        NewMessage("user", prompt, "complete", author=who, source="user"),
        NewMessage("assistant", "", "streaming", model=model, author=who, source="user"),
    ])  # fmt: skip
    final = Final(f"answer to {prompt[:10]}", "complete", None, *(tokens or (None, None)), cost)
    await db.finalize(reply["id"], final)
    return str(reply["id"])


async def test_usage_rows_group_by_day_person_and_model(store: StoreInterface) -> None:  # noqa: F811
    cid = (await store.create_conversation("t", "alice"))["id"]
    await _exchange(store, cid, "alice", "gpt", "one", (10, 5), 0.5)
    await _exchange(store, cid, "alice", "gpt", "two", (1, 2), 0.25)
    await _exchange(store, cid, "alice", "claude", "three", (3, 4), None)
    await _exchange(store, cid, "bob", "gpt", "four")  # no usage reported: counts as 0
    await _exchange(store, cid, None, None, "five", (1, 1), 0.0)
    now = time.time()
    rows = await store.usage_rows(now - 3600, now + 3600)
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    assert rows == [
        {"day": today, "person": "", "model": "", "replies": 1, "prompt_tokens": 1,
         "completion_tokens": 1, "cost": 0.0},
        {"day": today, "person": "alice", "model": "claude", "replies": 1, "prompt_tokens": 3,
         "completion_tokens": 4, "cost": 0.0},
        {"day": today, "person": "alice", "model": "gpt", "replies": 2, "prompt_tokens": 11,
         "completion_tokens": 7, "cost": 0.75},
        {"day": today, "person": "bob", "model": "gpt", "replies": 1, "prompt_tokens": 0,
         "completion_tokens": 0, "cost": 0.0},
    ]  # fmt: skip
    assert await store.usage_rows(now - 7200, now - 3600) == []  # the window excludes them


async def test_audit_rows_are_newest_first_with_the_prompt_and_page_without_gaps(
    store: StoreInterface,  # noqa: F811
) -> None:
    cid = (await store.create_conversation("t", "alice"))["id"]
    ids = [
        await _exchange(store, cid, "alice", "gpt", "x" * 600),
        await _exchange(store, cid, "bob", "claude", '=HYPERLINK("http://evil")'),
        await _exchange(store, cid, "alice", "gpt", "third"),
    ]
    now = time.time()
    first = await store.audit_rows(now - 60, now + 60, 2)
    assert [r["message_id"] for r in first] == ids[:0:-1]  # newest first
    assert (first[0]["person"], first[0]["model"], first[0]["prompt"]) == ("alice", "gpt", "third")
    assert (first[1]["source"], first[1]["status"]) == ("user", "complete")
    after = (first[-1]["at"], first[-1]["message_id"])
    rest = await store.audit_rows(now - 60, now + 60, 2, after)
    assert [r["message_id"] for r in rest] == ids[:1]
    assert rest[0]["prompt"] == "x" * 500  # cut: who sent what, not an export
    assert rest[0]["conversation_id"] == cid


@pytest.mark.fast
def test_a_span_is_inclusive_utc_days_and_bad_ones_are_refused() -> None:
    since, until = reports.span({"since": "2026-12-01", "until": "2026-12-01"})
    assert (since, until - since) == (dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
                                      .timestamp(), 86_400)  # fmt: skip
    since, until = reports.span({}, today=dt.date(2026, 12, 3))
    assert (until - since) / 86_400 == reports.DEFAULT_DAYS
    for bad in ({"since": "yesterday"}, {"since": "2026-12-02", "until": "2026-12-01"},
                {"since": "2020-01-01", "until": "2026-01-01"}):  # fmt: skip
        with pytest.raises(BadRequest):
            reports.span(bad)


@pytest.mark.fast
def test_csv_cells_a_spreadsheet_would_run_are_defused() -> None:
    text = reports.to_csv(("a", "b"), [{"a": "=1+1", "b": None}, {"a": "-2", "b": "plain"}])
    assert list(csv.reader(io.StringIO(text))) == [["a", "b"], ["'=1+1", ""], ["'-2", "plain"]]


async def _send(api: Api, cid: str, text: str) -> None:
    result = await api.send(cid, text)
    assert result["done"]["message"]["status"] == "complete"


async def test_an_admin_reads_usage_as_json_and_csv_and_the_audit_trail(api: Api) -> None:
    cid = await api.conversation()
    await _send(api, cid, "!tokens=3 first")
    await _send(api, cid, "!tokens=4 second")
    report = await api.ok("GET", "usage/report")
    (row,) = report["rows"]
    assert (row["model"], row["replies"], row["completion_tokens"]) == ("fake", 2, 7)
    r = await api.client.get("usage/report", params={"format": "csv"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    lines = list(csv.DictReader(io.StringIO(r.text)))
    assert [(x["person"], x["model"], x["replies"]) for x in lines] == [
        (row["person"], "fake", "2")
    ]
    audit = await api.ok("GET", "audit", limit=1)
    assert audit["sends"][0]["prompt"] == "!tokens=4 second"
    assert audit["next"]
    older = await api.ok("GET", "audit", limit=1, before=audit["next"])
    assert older["sends"][0]["prompt"] == "!tokens=3 first"
    for path, params in (
        ("usage/report", {"format": "xml"}),
        ("usage/report", {"since": "last week"}),
        ("audit", {"limit": "0"}),
        ("audit", {"before": "nonsense"}),
    ):
        status, body = await api.call("GET", path, **params)
        assert (status, set(body)) == (400, {"error"}), (path, params, body)


class TestNotAnAdmin:
    @pytest.fixture
    def r3nb_config(self) -> dict[str, Any]:
        return {"admin_users": ["someone-else"], "model_groups": {"lean": ["teachers"]}}

    async def test_a_model_kept_for_a_group_is_neither_listed_nor_usable(self, api: Api) -> None:
        models = await api.ok("GET", "models")
        assert [m["name"] for m in models["models"]] == ["demo", "fake"]
        cid = await api.conversation()
        status, body = await api.call(
            "POST", f"conversations/{cid}/messages", {"content": "hi", "model": "lean"}
        )
        assert status == 403, body
        assert "teachers" in body["error"]
        snapshot = await api.ok("GET", f"conversations/{cid}")
        assert snapshot["messages"] == []  # nothing stored, nothing spent
        await _send(api, cid, "!tokens=2 the open model works")

    async def test_reports_are_refused_with_403(self, api: Api) -> None:
        for path in ("usage/report", "audit"):
            status, body = await api.call("GET", path)
            assert status == 403, (path, body)
            assert "admin" in body["error"]
