"""r3nb's benchmarks: r3nb beside its baselines, in the same run, on the same local provider.

    .venv/bin/python bench/run.py                    # full, ~10–15 min
    .venv/bin/python bench/run.py --quick            # small sizes, 1 repetition, < 2 min
    .venv/bin/python bench/run.py --with-jupyter-ai  # also the jupyter-ai 3.x baseline
    .venv/bin/python bench/run.py --only ttft,store  # some sections

Prints medians and ratios and writes ``bench/results.json``. Never asserts on timings:
the machine is shared, so r3nb and its baselines are measured side by side, interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")

from bench import report  # noqa: E402
from bench.common import Provider, Server, litellm_module, model_entries, rnd  # noqa: E402

SECTIONS = report.SECTIONS


def machine() -> dict[str, Any]:
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    load = os.getloadavg()
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in load],
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("r3nb", "litellm", "jupyter_server", "duckdb", "httpx", "tornado"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "?"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, 1 repetition")
    ap.add_argument("--with-jupyter-ai", action="store_true", help="also the jupyter-ai baseline")
    ap.add_argument("--only", default="", help=f"comma-separated sections of {SECTIONS}")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, DB files)")
    args = ap.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}")
    # --quick leaves out the browser (a JupyterLab start alone takes ~30 s): ask for it
    # with --only browser.
    wanted = only or [
        s
        for s in SECTIONS
        if (s != "jupyter_ai" or args.with_jupyter_ai) and (s != "browser" or not args.quick)
    ]
    quick = args.quick
    workdir = Path(tempfile.mkdtemp(prefix="r3nb-bench-"))
    started = time.time()
    results: dict[str, Any] = {
        "mode": "quick" if quick else "full",
        "machine": machine(),
        "versions": versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print(f"r3nb bench ({results['mode']}), work dir {workdir}", flush=True)
    print(f"machine: {results['machine']}", flush=True)

    def section(name: str, fn: Any) -> None:
        if name not in wanted:
            return
        t = time.monotonic()
        print(f"\n== {name} …", flush=True)
        try:
            value = fn()
        except Exception as e:
            traceback.print_exc()
            value = {"error": f"{type(e).__name__}: {e}"}
        results[name] = rnd(value, 3)
        results.setdefault("section_seconds", {})[name] = round(time.monotonic() - t, 1)
        print(json.dumps(results[name], ensure_ascii=False, default=str)[:3000], flush=True)
        _write(args.out, results)

    needs_server = {
        "ttft",
        "throughput",
        "load",
        "ceiling",
        "observers",
        "watchers",
        "flushes",
        "burst",
        "diskbytes",
        "coldstart",
        "dialects",
        "kernel",
        "browser",
    } & set(wanted)
    provider: Provider | None = None
    server: Server | None = None
    try:
        # litellm's import takes seconds: do it while the processes start.
        importer = threading.Thread(target=litellm_module, daemon=True)
        importer.start()
        if needs_server or "jupyter_ai" in wanted:
            provider = Provider(workdir).start()
        if needs_server:
            assert provider is not None
            server = Server(
                workdir / "r3nb",
                {
                    "models": model_entries(provider.url),
                    "default_model": "lean",
                    "db_path": str(workdir / "r3nb" / "bench.duckdb"),
                    "rate_limit_per_minute": 0,
                    "max_concurrent_streams": 0,
                    "snapshot_interval": 2.0,
                },
            )
            (workdir / "r3nb").mkdir(parents=True, exist_ok=True)
            server.start()
            print(f"server pid {server.pid} on {server.url}, provider on {provider.url}")
        importer.join()
        _run_sections(section, server, provider, quick, workdir, wanted)
    finally:
        if server is not None:
            server.stop()
        if provider is not None:
            provider.stop()
        results["total_seconds"] = round(time.time() - started, 1)
        _write(args.out, results)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\n" + report.table(results))
    print(f"\nwrote {args.out} in {results['total_seconds']} s")
    return 0


def _run_sections(
    section: Any,
    server: Server | None,
    provider: Provider | None,
    quick: bool,
    workdir: Path,
    wanted: list[str],
) -> None:
    from bench import streaming, watch

    reps = 1 if quick else 5

    if server is not None and provider is not None:
        section("ttft", lambda: asyncio.run(streaming.ttft(server, provider, 5 if quick else 30)))
        section(
            "throughput",
            lambda: asyncio.run(
                streaming.throughput(
                    server, provider, 5_000 if quick else 20_000, reps if quick else 3
                )
            ),
        )

        def load() -> dict[str, Any]:
            tokens = 150 if quick else 1000  # 1.5 s / 10 s at 100 tokens/s
            out = {}
            for path in ("r3nb", "litellm", "httpx"):
                out[path] = asyncio.run(
                    streaming.load(
                        server if path == "r3nb" else None,
                        provider,
                        streams=50,
                        tokens=tokens,
                        delay=0.01,
                        path=path,
                    )
                )
                if path == "r3nb":  # the loop-lag/api-status reference when nothing streams
                    out["idle_api_status"] = _idle_status(server)
            return out

        section("load", load)

        def ceiling() -> dict[str, Any]:
            tokens = 150 if quick else 500
            counts = [100] if quick else [100, 200, 400]
            out: dict[str, Any] = {"tokens": tokens, "delay": 0.01, "runs": []}
            for n in counts:
                # direct litellm is far below pace from 50 streams on (one core of
                # pydantic per chunk): past 200 it would only take minutes to say so again.
                for path in ("r3nb", "litellm") if n <= 200 else ("r3nb",):
                    r = asyncio.run(
                        streaming.load(
                            server if path == "r3nb" else None,
                            provider,
                            streams=n,
                            tokens=tokens,
                            delay=0.01,
                            path=path,
                        )
                    )
                    out["runs"].append(r)
            for path in ("r3nb", "litellm"):
                keeps = [r for r in out["runs"] if r["path"] == path and r["pass_pace"]]
                out[f"{path}_ceiling_tokens_per_s"] = max(
                    (r["delivered_tokens_per_s"] for r in keeps), default=None
                )
                out[f"{path}_max_delivered_tokens_per_s"] = max(
                    r["delivered_tokens_per_s"] for r in out["runs"] if r["path"] == path
                )
            return out

        section("ceiling", ceiling)
        section(
            "observers",
            lambda: asyncio.run(
                streaming.load(
                    server,
                    provider,
                    streams=50,
                    tokens=200 if quick else 1000,
                    delay=0.01,
                    observers=200,
                    snapshot_interval=2.0,
                )
            ),
        )

        def watchers() -> dict[str, Any]:
            """The observers section's streams again, watched instead of polled: 1,000
            watch streams (200 with --quick) beside the 200 pollers measured just before."""
            found = asyncio.run(
                streaming.load(
                    server,
                    provider,
                    streams=50,
                    tokens=200 if quick else 1000,
                    delay=0.01,
                    observers=200 if quick else 1000,
                    snapshot_interval=2.0,
                    watch=True,
                )
            )
            # Its baseline in the same run: the same streams with nobody watching.
            alone = asyncio.run(
                streaming.load(
                    server,
                    provider,
                    streams=50,
                    tokens=200 if quick else 1000,
                    delay=0.01,
                    sample_status=False,
                )
            )
            found["without_watchers"] = {
                key: alone.get(key)
                for key in ("loop_lag", "server_cpu_ms_per_token", "pace_min", "wall_s")
            }
            found["idle"] = watch.idle_memory(workdir, provider, 200 if quick else 1000)
            found["prose"] = watch.prose(workdir)
            return found

        section("watchers", watchers)
        sizes = [(1_000, 0.0), (10_000, 0.0), (1_000, 0.005)]
        if not quick:
            sizes += [(100_000, 0.0), (2_000, 0.005)]
        section("flushes", lambda: asyncio.run(streaming.flushes(server, sizes)))

        from bench import dialects, round2

        def burst() -> dict[str, Any]:
            reps = 2 if quick else 5
            found = asyncio.run(round2.burst(server, provider, sends=50, reps=reps))
            found["store_admissions"] = asyncio.run(round2.store_admissions(workdir, 50, reps))
            return found

        section("burst", burst)
        disk_sizes = [(1_000, 0.005), (10_000, 0.001)]
        if not quick:
            disk_sizes += [(100_000, 0.0003)]
        section("diskbytes", lambda: asyncio.run(round2.diskbytes(workdir, provider, disk_sizes)))
        section("coldstart", lambda: round2.coldstart(workdir, provider))
        section("dialects", lambda: dialects.dialects(workdir, 5 if quick else 10))

        def kernel() -> dict[str, Any]:
            from bench import kernel as kbench

            return asyncio.run(
                kbench.run(server, reps=1 if quick else 3, tokens=5_000 if quick else 10_000)
            )

        section("kernel", kernel)

        def browser() -> dict[str, Any]:
            from bench import browser as bbench

            cases = (
                [("paragraphs", 2_000), ("paragraphs", 5_000), ("one-paragraph", 2_000)]
                if quick
                else [
                    ("paragraphs", 2_000),
                    ("paragraphs", 20_000),
                    ("one-paragraph", 2_000),
                    ("one-paragraph", 8_000),
                ]
            )
            return bbench.run(server, workdir, cases)

        section("browser", browser)

    def store() -> dict[str, Any]:
        from bench import store as sbench

        return sbench.run(workdir, 100_000 if quick else 1_000_000, reps=3 if quick else 15)

    section("store", store)

    def jupyter_ai() -> dict[str, Any]:
        from bench import jupyter_ai as jai

        assert provider is not None
        return jai.run(workdir, provider, quick=quick)

    section("jupyter_ai", jupyter_ai)


def _idle_status(server: Server) -> dict[str, Any]:
    from bench.streaming import _sampled, _sampler

    server.looplag(reset=True)
    status = _sampled(_sampler(server, 2.0))
    return {"api_status": status, "loop_lag": server.looplag(reset=True)}


def _write(path: str, results: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(results, indent=1, ensure_ascii=False, default=str) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
