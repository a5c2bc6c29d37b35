# ruff: noqa: E501  (long f-strings of table cells and SQL read better unwrapped)
"""The store at scale: N messages generated with DuckDB SQL straight into a file created
by ``r3nb.engine.store.Store`` (so the schema is the real one), then the observers'
snapshot query and the sweeper's query timed through the real ``Store`` methods."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import duckdb

from r3nb.engine.store import Store

from .common import median, pct

PER_CONVERSATION = 20
STALE_ROWS = 100


def _generate(path: Path, messages: int) -> dict[str, Any]:
    store = Store(path)
    store.open()
    store.close()
    conversations = messages // PER_CONVERSATION
    now = time.time()
    t0 = time.perf_counter()
    con = duckdb.connect(str(path))
    # Column lists, never positions: the schema grows (model, system_prompt, head_id…).
    con.execute(
        f"""INSERT INTO conversations (id, title, author, created_at, updated_at, revision, head_id)
           SELECT substr(md5('c' || i::VARCHAR), 1, 16), 'conversation ' || i, 'bench', ? - 86400 + i / 100.0,
                  ? - 86400 + i / 100.0, i * ? + ?,
                  substr(md5('m' || (i + {conversations} * {PER_CONVERSATION - 1})::VARCHAR), 1, 16)
           FROM range(?) t(i)""",
        [now, now, PER_CONVERSATION + 1, PER_CONVERSATION, conversations],
    )
    # Random-looking ids like the real ones, and a conversation's messages spread over
    # the whole table (interleaved in time with everyone else's): no zone-map luck.
    # ~300–900 characters a message: hex (little compressible) plus repeated words.
    con.execute(
        f"""INSERT INTO messages (id, conversation_id, seq, role, content, status, model, author,
                                  source, streaming_for, error, prompt_tokens, completion_tokens,
                                  cost, attachments, created_at, updated_at, revision, parent_id)
           SELECT substr(md5('m' || i::VARCHAR), 1, 16),
                  substr(md5('c' || (i % {conversations})::VARCHAR), 1, 16),
                  i // {conversations} + 1,
                  CASE WHEN (i // {conversations}) % 2 = 0 THEN 'user' ELSE 'assistant' END,
                  repeat(md5(i::VARCHAR) || ' ', 2 + (i % 7)) || repeat('stream token panel ', 10 + (i % 20)),
                  CASE WHEN i >= ? THEN 'streaming' ELSE 'complete' END,
                  CASE WHEN i % 2 = 1 THEN 'gpt' END, 'bench', 'user', NULL, NULL,
                  CASE WHEN i % 2 = 1 THEN 20 END, CASE WHEN i % 2 = 1 THEN 300 END,
                  CASE WHEN i % 2 = 1 THEN 0.0001 END, '[]',
                  ? - 86400 + i / 2000.0, ? - 86400 + i / 2000.0, i + 1,
                  CASE WHEN i >= {conversations} THEN substr(md5('m' || (i - {conversations})::VARCHAR), 1, 16) END
           FROM range(?) t(i)""",
        [messages - STALE_ROWS, now, now, messages],
    )
    con.execute("CHECKPOINT")
    avg = con.execute("SELECT avg(length(content)) FROM messages").fetchone()
    con.close()
    return {"generate_s": time.perf_counter() - t0, "avg_content_chars": avg[0] if avg else None}


def _cid(i: int) -> str:
    import hashlib

    return hashlib.md5(f"c{i}".encode()).hexdigest()[:16]


async def _timed(reps: int, fn: Any) -> list[float]:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def run(workdir: Path, messages: int, reps: int) -> dict[str, Any]:
    path = workdir / "store" / "million.duckdb"
    path.parent.mkdir(parents=True, exist_ok=True)
    info = _generate(path, messages)
    size = os.path.getsize(path) + (
        os.path.getsize(str(path) + ".wal") if os.path.exists(str(path) + ".wal") else 0
    )

    async def measure() -> dict[str, Any]:
        store = Store(path)
        t = time.perf_counter()
        store.open()
        open_ms = (time.perf_counter() - t) * 1000
        try:
            conversations = messages // PER_CONVERSATION
            last = _cid(conversations - 1)  # holds a streaming row
            middle = _cid(conversations // 2)
            rev = store.revision
            full = await _timed(reps, lambda: store.snapshot(middle, 0))
            nothing_new = await _timed(reps, lambda: store.snapshot(middle, rev))
            live = await _timed(reps, lambda: store.snapshot(last, rev - 5))
            cutoff = time.time() - 300
            t = time.perf_counter()
            swept = await store.fail_streaming("stale", older_than=cutoff)
            sweep_first = (time.perf_counter() - t) * 1000
            sweep_idle = await _timed(
                reps, lambda: store.fail_streaming("stale", older_than=time.time() - 300)
            )
            get_conv = await _timed(reps, lambda: store.get_conversation(middle))
            return {
                "open_ms": open_ms,
                "snapshot_since_0_ms_median": median(full),
                "snapshot_since_0_ms_p90": pct(full, 90),
                "snapshot_nothing_new_ms_median": median(nothing_new),
                "snapshot_streaming_conversation_ms_median": median(live),
                "sweep_with_stale_rows_ms": sweep_first,
                "sweep_rows_failed": len(swept),
                "sweep_nothing_to_do_ms_median": median(sweep_idle),
                "get_conversation_ms_median": median(get_conv),
            }
        finally:
            store.close()

    timings = asyncio.run(measure())
    snap = max(
        timings["snapshot_since_0_ms_median"] or 0, timings["snapshot_nothing_new_ms_median"] or 0
    )
    sweep = max(timings["sweep_with_stale_rows_ms"], timings["sweep_nothing_to_do_ms_median"] or 0)
    return {
        "messages": messages,
        "per_conversation": PER_CONVERSATION,
        **info,
        "db_bytes": size,
        "db_bytes_per_message": size / messages,
        **timings,
        "target": "snapshot and sweep < 50 ms each",
        "pass": {"snapshot": snap < 50, "sweep": sweep < 50},
    }
