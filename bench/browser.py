"""Browser: long replies streamed into the r3nb panel in headless Chromium (JupyterLab).

Reuses the browser tests' JupyterLab subprocess and page helpers (``tests/lab.py``).
Per reply size: CPU time spent in scripts (CDP ``Performance.getMetrics`` ScriptDuration
delta), every long task (PerformanceObserver ``longtask``), and the wall time to the
final status. Paced at 1,000 tokens/s so the panel renders many frames, as it would
for a real provider.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from .common import PY, ROOT, Server, _stop, free_port, model_entries

LONGTASKS = """() => {
  window.__benchLong = [];
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.__benchLong.push(e.duration);
  }).observe({type: 'longtask', buffered: false});
}"""


def _metrics(cdp: Any) -> dict[str, float]:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


class TextProvider:
    """A provider process on a fixed port whose reply is ``text`` (restartable)."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir, self.port = workdir, port
        self.proc: subprocess.Popen[bytes] | None = None

    def serve(self, text: str | None) -> None:
        import httpx

        _stop(self.proc)
        self.proc = None
        if text is None:  # the generated one-paragraph reply: plain tests.provider
            cmd = [PY, "-m", "tests.provider", "--port", str(self.port)]
        else:
            f = self.workdir / "reply.md"
            f.write_text(text)
            cmd = [PY, "-m", "tests.provider", "--port", str(self.port), "--text-file", str(f)]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(300):
            try:
                if (
                    httpx.get(f"http://127.0.0.1:{self.port}/v1/models", timeout=1).status_code
                    == 200
                ):
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("text provider did not start")

    def stop(self) -> None:
        _stop(self.proc)


def run(
    server: Server, workdir: Path, cases: list[tuple[str, int]], delay: float = 0.001
) -> dict[str, Any]:
    """``cases``: (shape, tokens), shape "paragraphs" (a blank line every 60 words) or
    "one-paragraph" (the generated reply: newlines but no blank line, the worst case
    for a renderer that commits finished blocks)."""
    from tests import lab as labmod

    from .provider_text import paragraphs

    if not Path(labmod.CHROMIUM).exists():
        return {"skipped": f"no Chromium at {labmod.CHROMIUM}"}
    from playwright.sync_api import sync_playwright

    wd = workdir / "browser"
    wd.mkdir(parents=True, exist_ok=True)
    text_provider = TextProvider(wd, free_port())
    provider_url = f"http://127.0.0.1:{text_provider.port}/v1"
    lab = labmod.JupyterLab(
        wd,
        {
            "db_path": str(wd / "r3nb.duckdb"),
            "models": {"lean": model_entries(provider_url)["lean"]},
            "default_model": "lean",
            "rate_limit_per_minute": 0,
        },
    )
    runs = []
    try:
        lab.start()
        cid = lab.create_conversation("browser bench")
        labmod.panel_notebook(lab.root / "bench.ipynb", cid)
        guard = labmod.Guard()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=labmod.CHROMIUM, args=labmod.CHROMIUM_ARGS, headless=True
            )
            try:
                page = guard.new_page(browser)
                labmod.open_notebook(page, lab.lab_url("bench.ipynb", "wsbench"))
                labmod.run_all_and_wait_for_panel(page)
                cdp = page.context.new_cdp_session(page)
                cdp.send("Performance.enable")
                for shape, tokens in cases:
                    text_provider.serve(paragraphs(tokens) if shape == "paragraphs" else None)
                    page.evaluate(LONGTASKS)
                    m0 = _metrics(cdp)
                    t0 = time.perf_counter()
                    mid = labmod.send(page, f"bench !tokens={tokens} !delay={delay:g}")
                    labmod.wait_status(
                        page, mid, "complete", timeout=tokens * delay * 1000 * 10 + 60_000
                    )
                    wall = time.perf_counter() - t0
                    m1 = _metrics(cdp)
                    longs = page.evaluate("window.__benchLong")
                    shown = labmod.content_text(page, mid)
                    runs.append(
                        {
                            "shape": shape,
                            "tokens": tokens,
                            "delay": delay,
                            "wall_s": wall,
                            "provider_s": tokens * delay,
                            "scripting_ms": (m1["ScriptDuration"] - m0["ScriptDuration"]) * 1000,
                            "task_ms": (m1["TaskDuration"] - m0["TaskDuration"]) * 1000,
                            "layout_ms": (m1["LayoutDuration"] - m0["LayoutDuration"]) * 1000,
                            "longtasks": len(longs),
                            "longest_task_ms": max(longs or [0]),
                            "shown_chars": len(shown),
                        }
                    )
                page.context.close()
            finally:
                browser.close()
    finally:
        lab.stop()
        text_provider.stop()
    growth: dict[str, Any] = {}
    for shape in dict.fromkeys(r["shape"] for r in runs):
        mine = [r for r in runs if r["shape"] == shape]
        if len(mine) >= 2:
            small, big = mine[0], mine[-1]
            growth[shape] = {
                "size": big["tokens"] / small["tokens"],
                "scripting": big["scripting_ms"] / max(1e-9, small["scripting_ms"]),
                "task": big["task_ms"] / max(1e-9, small["task_ms"]),
            }
    para = growth.get("paragraphs")
    return {
        "runs": runs,
        "growth": growth,
        "guard_blocked": guard.blocked[:5],
        "target": "scripting ~linear in reply length; no long task > 50 ms",
        "pass": None
        if para is None
        else (
            para["scripting"] <= para["size"] * 1.5
            and all(r["longest_task_ms"] <= 50 for r in runs if r["shape"] == "paragraphs")
        ),
    }
