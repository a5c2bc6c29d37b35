"""Issue 14's figure per dialect: a reply's first token through r3nb against the same call
made with litellm directly, on the same local simulator of that dialect (tests/dialects.py).

"Within 10 ms of a direct call's" is the target for Ollama (litellm used to ask
``/api/show`` at the wrong host before every reply); the other dialects are shown beside
it. Replies alternate r3nb / direct so both see the same machine load; the first two of
each are warm-up and not counted. The direct baseline is told where Ollama is
(``OLLAMA_API_BASE``), as a person calling litellm would.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from bench.common import (
    Server,
    StreamResult,
    client,
    litellm_module,
    median,
    new_conversation,
    pct,
    r3nb_send,
    rnd,
)
from tests.dialects import DialectProvider

KEY = "sk-bench-dialect-key-0123456789"
#: r3nb's model name → (litellm model, which base): OpenAI-compatible on both of r3nb's
#: paths (the lean reader in the server, litellm in the worker), then the other dialects.
DIALECTS = {
    "openai-lean": ("openai/fake", "url"),
    "openai-litellm": ("openai/fake", "url"),
    "ollama_chat": ("ollama_chat/llama3.2", "root"),
    "ollama": ("ollama/llama3.2", "root"),
    "anthropic": ("anthropic/claude-haiku-4-5", "anthropic_base"),
    "gemini": ("gemini/gemini-2.5-flash", "gemini_base"),
}
TARGET_MS = 10.0


async def _direct(model: str, base: str, content: str) -> StreamResult:
    litellm = litellm_module()
    res = StreamResult(t_post=time.perf_counter())
    try:
        response = await litellm.acompletion(
            model=model,
            api_base=base,
            api_key=KEY,
            messages=[{"role": "user", "content": content}],
            stream=True,
            max_retries=0,
        )
        async for chunk in response:
            if chunk.choices and chunk.choices[0].delta.content and res.t_first is None:
                res.t_first = time.perf_counter()
        res.t_done = time.perf_counter()
    except Exception as e:
        res.error = f"{type(e).__name__}: {str(e)[:200]}"
    return res


def _ms(r: StreamResult) -> float | None:
    return None if r.t_first is None else (r.t_first - r.t_post) * 1000


async def _compare(server: Server, dp: DialectProvider, reps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with client(server.api, server.headers) as api:
        for name, (model, base_attr) in DIALECTS.items():
            base = getattr(dp, base_attr)
            cid = await new_conversation(api, f"dialect {name}")
            ours: list[float] = []
            direct: list[float] = []
            errors: list[str] = []
            for i in range(reps + 2):
                content = f"!tokens=20 ttft {name} {i}"
                mine = await r3nb_send(api, cid, content, name)
                theirs = await _direct(model, base, content)
                for r, into in ((mine, ours), (theirs, direct)):
                    if r.error:
                        errors.append(r.error)
                    elif i >= 2 and (ms := _ms(r)) is not None:
                        into.append(ms)
            diff = (
                None
                if median(ours) is None or median(direct) is None
                else median(ours) - median(direct)  # type: ignore[operator]
            )
            row: dict[str, Any] = {
                "r3nb_ttft_p50_ms": rnd(median(ours)),
                "r3nb_ttft_p90_ms": rnd(pct(ours, 90)),
                "direct_ttft_p50_ms": rnd(median(direct)),
                "direct_ttft_p90_ms": rnd(pct(direct, 90)),
                "diff_p50_ms": rnd(diff),
                "errors": errors[:3],
            }
            if name.startswith("ollama"):
                row["pass"] = diff is not None and diff <= TARGET_MS and not errors
            out[name] = row
    return out


def dialects(workdir: Path, reps: int = 10) -> dict[str, Any]:
    with DialectProvider() as dp:
        os.environ["OLLAMA_API_BASE"] = dp.root  # the direct baseline's /api/show
        models: dict[str, Any] = {
            name: {"model": model, "api_base": getattr(dp, base), "api_key": KEY}
            for name, (model, base) in DIALECTS.items()
        }
        models["openai-litellm"]["stream_path"] = "litellm"  # the same provider, both paths
        server = Server(
            workdir / "dialects",
            {
                "models": models,
                "db_path": str(workdir / "dialects" / "bench.duckdb"),
                "rate_limit_per_minute": 0,
                "max_concurrent_streams": 0,
            },
        )
        server.wait_for_provider = True
        (workdir / "dialects").mkdir(parents=True, exist_ok=True)
        server.start()
        try:
            out = asyncio.run(_compare(server, dp, reps))
        finally:
            server.stop()
    out["target"] = f"Ollama: r3nb's first token within {TARGET_MS:g} ms of direct litellm's (p50)"
    out["pass"] = all(out[n]["pass"] for n in DIALECTS if n.startswith("ollama"))
    return out
