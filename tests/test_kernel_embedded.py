"""The kernel side with no r3nb server: embedded mode, the load-time budget, the demo
notebook run headless."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from tests.kernels import KernelSession, embedded_env, start_embedded_kernel

HEAVY = ["litellm", "duckdb", "pandas", "anywidget", "httpx", "r3nb.kernel.client"]
NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "demo.ipynb"


async def test_load_ext_is_instant_and_imports_nothing_heavy(plain_kernel: KernelSession) -> None:
    out = await plain_kernel.ok(
        "import sys, time, json\n"
        f"heavy = {HEAVY!r}\n"
        "before = [m for m in heavy if m in sys.modules]\n"
        "t = time.perf_counter()\n"
        "get_ipython().run_line_magic('load_ext', 'r3nb')\n"
        "ms = (time.perf_counter() - t) * 1000\n"
        "print(json.dumps({'before': before, 'ms': ms,\n"
        "                  'after': [m for m in heavy if m in sys.modules]}))\n"
    )
    *hint, last = out.stdout.strip().splitlines()
    result = json.loads(last)
    print(f"%load_ext r3nb: {result['ms']:.1f} ms in a kernel")
    assert result["before"] == []
    assert result["after"] == []
    assert result["ms"] < 300
    assert len(hint) == 1, "one line on how to open the panel"
    assert "%r3nb" in hint[0]
    assert "chat" in (
        await plain_kernel.json("sorted(get_ipython().magics_manager.magics['cell'])")
    )


def test_import_time_of_the_magics_module() -> None:
    """``python -X importtime``: what loading the extension costs beyond IPython itself."""
    code = "import IPython.core.magic, IPython.core.magic_arguments; import r3nb.kernel.magics"
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    ours = [line for line in run.stderr.splitlines() if "r3nb" in line]
    cumulative_us = max(int(line.split("|")[1]) for line in ours)
    print(f"import r3nb.kernel.magics: {cumulative_us / 1000:.1f} ms cumulative")
    assert cumulative_us < 100_000
    imported = {line.split("|")[2].strip() for line in run.stderr.splitlines()[1:]}
    assert not imported & {"litellm", "duckdb", "pandas", "anywidget", "httpx"}


async def test_embedded_chat_runs_the_demo_model_in_the_kernel(
    plain_kernel: KernelSession, tmp_path: Path
) -> None:
    await plain_kernel.ok("%load_ext r3nb\nimport pandas as pd\ndf = pd.DataFrame({'x': [1, 2]})")
    run = await plain_kernel.ok("%%chat\nhow does streaming work? look at @df", timeout=90)
    assert "running in this kernel" in run.stdout
    final = run.displays()[-1]["content"]["data"]["text/plain"]
    footer = final.splitlines()[-1]
    assert "demo" in footer, footer
    assert "complete" in footer, footer
    assert "How streaming works in r3nb" in final
    assert "You attached the variable `df`" in final
    assert len(run.of_type("update_display_data")) >= 2
    state = await plain_kernel.json(
        "(lambda c: {'mode': c.mode, 'db': c.db_path, 'health': c.health()['ok'],"
        " 'n': len(c.snapshot(c.conversations()[0]['id'])['messages'])})"
        "(__import__('r3nb.kernel.connect', fromlist=['x']).get_client())"
    )
    assert state == {"mode": "embedded", "db": str(tmp_path / "embedded.duckdb"),
                     "health": True, "n": 2}  # fmt: skip
    assert (tmp_path / "embedded.duckdb").exists()
    # The same relay the panel uses, over the in-kernel engine.
    relayed = await plain_kernel.json(
        "(lambda p, sent: (setattr(p, 'send', lambda m, buffers=None: sent.append(m)),"
        " p._relay({'type': 'request', 'id': 'x', 'method': 'GET', 'path': 'models'}),"
        " [p.mode, p.api_base, sent])[-1])(__import__('r3nb').ChatPanel(), [])"
    )
    assert relayed[:2] == ["embedded", ""]
    assert relayed[2][0]["status"] == 200
    assert relayed[2][0]["body"]["default"] == "demo"


async def test_unknown_model_is_a_short_message_not_a_traceback(
    plain_kernel: KernelSession,
) -> None:
    await plain_kernel.ok("%load_ext r3nb")
    run = await plain_kernel.ok("%%chat -m nosuch\nhello")
    shown = run.displays()[-1]["content"]["data"]["text/plain"]
    assert shown.strip().startswith("r3nb: unknown model 'nosuch'; known models: demo")
    assert "Traceback" not in run.stdout + run.stderr


@pytest.fixture
def embedded_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = embedded_env(tmp_path)
    for key in [k for k in list(__import__("os").environ) if k.startswith("R3NB_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


async def test_demo_notebook_runs_top_to_bottom_headless(
    embedded_environ: dict[str, Any], tmp_path: Path
) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    started = time.monotonic()
    client = NotebookClient(
        notebook, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    await client.async_execute()
    elapsed = time.monotonic() - started
    print(f"demo notebook: {elapsed:.1f} s")
    assert elapsed < 60
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = json.dumps([o.get("data", o.get("text")) for o in outputs])
    assert "application/vnd.jupyter.widget-view+json" in text, "the panel was displayed"
    assert "How streaming works in r3nb" in text
    assert "You attached the variable `df`" in text
    assert "## Assistant (demo)" in text


async def test_a_second_embedded_kernel_gets_its_own_store_and_says_so(tmp_path: Path) -> None:
    """DuckDB admits one process per file: the shared default goes to the first kernel."""
    env = embedded_env(tmp_path)
    del env["R3NB_DB"]  # the shared default under JUPYTER_DATA_DIR
    probe = (
        "from r3nb.kernel.connect import get_client as g; c = g(); print(c.db_path); print(c.note)"
    )
    started = []
    try:
        for _ in range(2):
            started.append(await start_embedded_kernel(env=env, cwd=str(tmp_path)))
        first, second = (KernelSession(client, "") for _, client in started)
        one = (await first.ok(probe)).stdout.splitlines()
        two = (await second.ok(probe)).stdout.splitlines()
    finally:
        for manager, client in started:
            client.stop_channels()
            await manager.shutdown_kernel(now=True)
    shared = tmp_path / "data" / "r3nb" / "embedded.duckdb"
    assert one == [str(shared), ""]
    assert two[0].startswith(str(shared.parent / "embedded-"))
    assert "in use by another kernel" in two[1]
