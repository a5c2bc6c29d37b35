# ruff: noqa: E501  (long f-strings of table cells and SQL read better unwrapped)
"""Baseline: jupyter-ai 3.x (Jupyternaut) on the same local provider, driven like a person
would: a ``.chat`` open in two headless Chromium pages, one sends, both watch.

Installed into a SEPARATE environment (``.bench-venv``; never the project's ``.venv``).
Optional (``--with-jupyter-ai``); every failure becomes ``{"skipped": reason}``.
Measures: click → first token visible in the sender's and the observer's page, reply
wall time, bytes each page received over its websockets for the whole reply (Yjs
updates), and the server's CPU per token.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from .common import ROOT, Provider, _stop, cpu_seconds, free_port

VENV = ROOT / ".bench-venv"
PIP_SPEC = "jupyter-ai[jupyternaut,rtc]>=3.0.0b0"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling",
]
FIRST_WORD = "Hello"  # tests.provider.generated_word(0)


def ensure_env(log: Path) -> str | None:
    """Create .bench-venv and install jupyter-ai into it; None when ready, else why not."""
    py = VENV / "bin" / "python"
    if (VENV / "bin" / "jupyter-lab").exists():
        probe = subprocess.run(
            [
                str(py),
                "-c",
                "import jupyter_ai, jupyter_ai_jupyternaut; print(jupyter_ai.__version__)",
            ],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0:
            return None
    with log.open("ab") as out:
        steps = [
            ["python3", "-m", "venv", str(VENV)],
            [str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"],
            [str(py), "-m", "pip", "install", "-q", PIP_SPEC],
        ]
        for step in steps:
            try:
                rc = subprocess.run(
                    step, stdout=out, stderr=subprocess.STDOUT, timeout=1200
                ).returncode
            except (OSError, subprocess.TimeoutExpired) as e:
                return f"{' '.join(step[:4])}: {e}"
            if rc != 0:
                return f"`{' '.join(step[-2:])}` failed (rc {rc}); see {log}"
    return None


class Lab:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.token = "jai-" + os.urandom(8).hex()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "jupyter-ai-lab.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def start(self) -> Lab:
        for sub in ("config", "runtime", "data", "root", "workspaces", "settings"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("R3NB_", "VIRTUAL_ENV"))
        } | {
            "JUPYTER_CONFIG_DIR": str(self.workdir / "config"),
            "JUPYTER_RUNTIME_DIR": str(self.workdir / "runtime"),
            "JUPYTER_DATA_DIR": str(self.workdir / "data"),
            "JUPYTERLAB_WORKSPACES_DIR": str(self.workdir / "workspaces"),
            "JUPYTERLAB_SETTINGS_DIR": str(self.workdir / "settings"),
            "FASTMCP_CHECK_FOR_UPDATES": "off",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "OPENAI_API_KEY": "none",
            "PATH": f"{VENV / 'bin'}:{os.environ.get('PATH', '')}",
        }
        self.proc = subprocess.Popen(
            [
                str(VENV / "bin" / "python"),
                "-m",
                "jupyterlab",
                "--no-browser",
                f"--port={self.port}",
                "--ServerApp.ip=127.0.0.1",
                "--ServerApp.port_retries=0",
                "--ServerApp.allow_root=True",
                f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={self.workdir / 'root'}",
                "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ],
            cwd=self.workdir,
            env=env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited: {self.log.read_text()[-2000:]}")
            try:
                r = httpx.get(self.url + "api/jupyternaut/config", headers=self.headers, timeout=2)
                if r.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"jupyter lab (jupyter-ai) not ready: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                httpx.post(self.url + "api/shutdown", headers=self.headers, timeout=5)
                self.proc.wait(timeout=15)
            except (httpx.HTTPError, subprocess.TimeoutExpired):
                pass
        _stop(self.proc)
        if self.proc is not None:  # kernels or helpers it started, by its process group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, 9)


def configure(lab: Lab, provider: Provider) -> None:
    body = {
        "model_provider_id": "openai/fake",
        "fields": {"openai/fake": {"api_base": provider.url, "api_key": "none"}},
        "api_keys": {"OPENAI_API_KEY": "none"},
    }
    r = httpx.post(lab.url + "api/jupyternaut/config", headers=lab.headers, json=body, timeout=30)
    if r.status_code >= 300:
        raise RuntimeError(f"POST api/jupyternaut/config: {r.status_code} {r.text[:300]}")


_WATCH_JS = """(word) => {
  window.__bench = {first: null, last: null, len: 0};
  const check = () => {
    const nodes = document.querySelectorAll('.jp-chat-rendered-markdown, .jp-chat-message');
    let best = 0;
    for (const n of nodes) {
      const t = n.innerText || '';
      if (t.includes(word)) best = Math.max(best, t.length);
    }
    if (best > 0) {
      const now = performance.now();
      if (window.__bench.first === null) window.__bench.first = now;
      if (best !== window.__bench.len) { window.__bench.len = best; window.__bench.last = now; }
    }
  };
  new MutationObserver(check).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def run(workdir: Path, provider: Provider, *, quick: bool) -> dict[str, Any]:
    wd = workdir / "jupyter-ai"
    wd.mkdir(parents=True, exist_ok=True)
    t_install = time.monotonic()
    why = ensure_env(wd / "install.log")
    if why:
        print(f"jupyter-ai baseline skipped: {why}")
        return {"skipped": why}
    install_s = time.monotonic() - t_install
    if not Path(CHROMIUM).exists():
        return {"skipped": f"no Chromium at {CHROMIUM}"}
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        return {"skipped": f"playwright not importable: {e}"}
    lab = Lab(wd)
    try:
        lab.start()
        configure(lab, provider)
        version = subprocess.run(
            [
                str(VENV / "bin" / "python"),
                "-c",
                "import jupyter_ai; print(jupyter_ai.__version__)",
            ],
            capture_output=True,
            text=True,
        ).stdout.strip()
        sizes = [(300, 0.01)] if quick else [(300, 0.01), (1000, 0.01)]
        runs = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for i, (tokens, delay) in enumerate(sizes):
                    runs.append(_one_reply(lab, browser, f"bench{i}.chat", tokens, delay))
            finally:
                browser.close()
        return {
            "version": version,
            "install_check_s": install_s,
            "runs": runs,
            "summary": _summary(runs),
        }
    finally:
        lab.stop()


def _one_reply(lab: Lab, browser: Any, name: str, tokens: int, delay: float) -> dict[str, Any]:
    r = httpx.put(
        lab.url + f"api/contents/{name}",
        headers=lab.headers,
        timeout=30,
        json={"type": "file", "format": "text", "content": ""},
    )
    r.raise_for_status()
    pages = []
    for role in ("sender", "observer"):
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        received = {"bytes": 0}
        cdp = ctx.new_cdp_session(page)
        cdp.send("Network.enable")

        def on_frame(ev: dict[str, Any], received: dict[str, int] = received) -> None:
            resp = ev.get("response", {})
            data = resp.get("payloadData", "")
            # binary frames (Yjs) arrive base64-encoded
            received["bytes"] += (
                len(data) * 3 // 4 if resp.get("opcode") == 2 else len(data.encode())
            )

        cdp.on("Network.webSocketFrameReceived", on_frame)
        page.goto(lab.url + f"lab/tree/{name}?token={lab.token}&reset")
        page.wait_for_selector(
            ".jp-chat-input-container textarea, .jp-chat-input-container [contenteditable]",
            timeout=90_000,
        )
        page.evaluate(_WATCH_JS, FIRST_WORD)
        pages.append((role, ctx, page, received))
    expected_len = len(_expected(tokens))
    sender = pages[0][2]
    box = sender.locator(
        ".jp-chat-input-container textarea, .jp-chat-input-container [contenteditable]"
    ).first
    box.click()
    box.fill(f"@Jupyternaut bench !tokens={tokens} !delay={delay:g}")
    time.sleep(0.3)  # the mention menu opens on '@'
    sender.keyboard.press("Escape")
    box.click()
    cpu0 = cpu_seconds(lab.proc.pid) if lab.proc else 0.0
    bytes0 = [p[3]["bytes"] for p in pages]
    t_click = sender.evaluate("performance.now()")
    sender.keyboard.press("Enter")
    deadline = time.monotonic() + max(60, tokens * delay * 20)
    done: dict[str, Any] = {}
    while time.monotonic() < deadline:
        states = [p[2].evaluate("window.__bench") for p in pages]
        if all(s["len"] >= expected_len * 0.98 for s in states):
            # quiet for 1 s: the reply has ended
            time.sleep(1.0)
            again = [p[2].evaluate("window.__bench") for p in pages]
            if [s["len"] for s in again] == [s["len"] for s in states]:
                done = {"states": again}
                break
        time.sleep(0.1)
    cpu1 = cpu_seconds(lab.proc.pid) if lab.proc else 0.0
    out: dict[str, Any] = {"tokens": tokens, "delay": delay, "reply_chars": expected_len}
    if not done:
        states = [p[2].evaluate("window.__bench") for p in pages]
        out["timeout"] = True
        out["states"] = states
        shot = lab.workdir / f"{name}.png"
        sender.screenshot(path=str(shot))
        out["screenshot"] = str(shot)
    else:
        out["states"] = done["states"]
    s_state, o_state = out["states"]
    out["sender_first_token_ms"] = (s_state["first"] - t_click) if s_state["first"] else None
    out["sender_complete_ms"] = (s_state["last"] - t_click) if s_state["last"] else None
    # the observer page's clock differs: report its first→last span only
    out["observer_span_ms"] = (o_state["last"] - o_state["first"]) if o_state["first"] else None
    reply_bytes = len(_expected(tokens).encode())
    for (role, *_rest), b0, b1 in zip(pages, bytes0, [p[3]["bytes"] for p in pages], strict=True):
        out[f"{role}_ws_bytes"] = b1 - b0
        out[f"{role}_bytes_over_reply"] = (b1 - b0) / reply_bytes
    out["server_cpu_s"] = cpu1 - cpu0
    out["server_cpu_ms_per_token"] = (cpu1 - cpu0) * 1000 / tokens
    for _, ctx, _page, _ in pages:
        ctx.close()
    return out


def _expected(tokens: int) -> str:
    from tests.provider import generated_text

    return generated_text(tokens)


def _summary(runs: list[dict[str, Any]]) -> list[tuple[str, str, str, str, Any]]:
    rows = []
    for r in runs:
        rows.append(
            (
                f"jupyter-ai {r['tokens']:,}-token reply @100 tok/s: click→first token (sender page)",
                "",
                f"{_ms(r.get('sender_first_token_ms'))}; complete {_ms(r.get('sender_complete_ms'))}"
                f" (provider {r['tokens'] * r['delay']:.0f} s)",
                "context",
                None,
            )
        )
        rows.append(
            (
                "… jupyter-ai: websocket bytes per page / reply text",
                "",
                f"sender {r.get('sender_bytes_over_reply', 0):.1f}×, observer"
                f" {r.get('observer_bytes_over_reply', 0):.1f}×; server CPU"
                f" {r.get('server_cpu_ms_per_token', 0):.2f} ms/token",
                "context",
                None,
            )
        )
    return rows


def _ms(x: Any) -> str:
    return "–" if x is None else f"{x:,.0f} ms"
