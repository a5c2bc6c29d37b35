"""Kernel-side rules from issue 13: reading a conversation never redirects ``%%chat``,
terminal IPython gets text (not reprs), and costs read the same in the panel and in
``%%chat``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from r3nb.kernel.view import format_cost
from tests.kernels import KernelSession, embedded_env

REPO = Path(__file__).resolve().parent.parent


async def test_reading_a_conversation_never_changes_where_chat_sends(
    server_kernel: KernelSession,
) -> None:
    out = await server_kernel.ok(
        "import r3nb, json\n"
        "from r3nb.kernel.client import current_conversation\n"
        "from r3nb.kernel.connect import get_client\n"
        "r3nb.chat('in the current one !tokens=2')\n"
        "current = current_conversation()\n"
        "other = get_client().create_conversation('other')['id']\n"
        "r3nb.chat('in the other one !tokens=2', conversation=other)\n"
        "r3nb.chat('back !tokens=2', conversation=current)\n"
        "r3nb.history(other); r3nb.export(other)\n"
        "after_reads = current_conversation()\n"
        "try:\n"
        "    r3nb.export('0123456789abcdef')\n"
        "    bogus = 'accepted'\n"
        "except Exception as e:\n"
        "    bogus = f'{type(e).__name__}: {e}'\n"
        "after_bogus = current_conversation()\n"
        "r3nb.chat('still works !tokens=2')\n"
        "n = len(r3nb.history(current))\n"
        "print(json.dumps([current, other, after_reads, bogus, after_bogus, n]))\n"
    )
    current, other, after_reads, bogus, after_bogus, n = json.loads(
        out.stdout.strip().splitlines()[-1]
    )
    assert current != other
    assert after_reads == current
    assert "no conversation" in bogus
    assert "Traceback" not in bogus
    assert after_bogus == current
    assert n == 6  # three exchanges in the current conversation, none lost


# --- terminal IPython ------------------------------------------------------------------


def _ipython() -> str:
    found = shutil.which("ipython", path=str(Path(sys.executable).parent))
    assert found, "IPython's terminal entry point is part of the test environment"
    return found


def _run_ipython(tmp_path: Path, code: str) -> tuple[list[tuple[float, bytes]], str]:
    """Run ``code`` as one cell of a terminal IPython with r3nb loaded; the stdout reads
    with their arrival times, and stderr."""
    env = embedded_env(tmp_path, R3NB_DEMO_DELAY="0.012")  # 124 words: 1.5 s
    proc = subprocess.Popen(
        [_ipython(), "--no-banner", "--colors=NoColor", "--HistoryManager.enabled=False",
         "--ext", "r3nb", "-c", code],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stderr is not None
    reads: list[tuple[float, bytes]] = []
    try:
        while chunk := os.read(proc.stdout.fileno(), 4096):
            reads.append((time.monotonic(), chunk))
        proc.wait(timeout=60)
        return reads, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_terminal_ipython_explains_the_panel(tmp_path: Path) -> None:
    reads, stderr = _run_ipython(tmp_path, "%r3nb")
    assert "the chat panel needs a notebook" in stderr
    assert "ChatPanel(" not in b"".join(c for _, c in reads).decode()


def test_terminal_ipython_streams_a_chat_reply(tmp_path: Path) -> None:
    reads, _ = _run_ipython(tmp_path, "%%chat\ntell me about streaming\n")
    text = b"".join(c for _, c in reads).decode()
    assert "offline demo model" in text
    assert "How streaming works" in text
    assert "[demo · complete ·" in text
    # The reply arrived in pieces while it streamed, not all at the end.
    first_text, footer_at = _first_seen(reads, b"offline demo"), _first_seen(reads, b"[demo")
    assert footer_at - first_text > 0.5, [c[:40] for _, c in reads]


def _first_seen(reads: list[tuple[float, bytes]], needle: bytes) -> float:
    """When ``needle`` had fully arrived on stdout (it may span two reads)."""
    seen = b""
    for at, chunk in reads:
        seen += chunk
        if needle in seen:
            return at
    raise AssertionError(f"{needle!r} never arrived")


# --- one cost format -------------------------------------------------------------------


@pytest.mark.parametrize("cost", [0, 0.00001, 0.0001, 0.0012345, 0.05, 0.99999, 1, 12.345])
def test_costs_read_the_same_in_the_panel_and_in_chat(cost: float) -> None:
    node = shutil.which("node")
    assert node, "node is part of the test environment (the widget's tests need it)"
    dom = (REPO / "js" / "src" / "dom.js").as_uri()
    code = f"import('{dom}').then(m => console.log(m.formatCost({json.dumps(cost)})))"
    js = subprocess.run([node, "-e", code], capture_output=True, text=True, check=True)
    assert js.stdout.strip() == format_cost(cost)


@contextlib.contextmanager
def unreachable_client() -> Iterator[Any]:
    """A ServerClient whose server is not there (a port bound, then closed again)."""
    import socket

    from r3nb.kernel.client import ServerClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    client = ServerClient(f"http://127.0.0.1:{port}/r3nb/api/", "secret", timeout=2)
    try:
        yield client
    finally:
        client.close()


def test_a_panel_is_built_without_asking_the_server() -> None:
    """``ChatPanel()`` makes no HTTP call (the page reads health and models on its own
    route): with the server unreachable it still builds, and the page shows why."""
    from r3nb.kernel.panel import ChatPanel

    with unreachable_client() as client:
        panel = ChatPanel(conversation_id="abc", client=client)
        assert (panel.mode, panel.conversation_id) == ("server", "abc")
        assert (panel.snapshot_interval, panel.default_model) == (0, "")  # the server's


def test_a_panels_plain_text_says_how_to_reopen_it_and_its_view_is_kept() -> None:
    """Issue 13: a saved notebook shows a panel's ``text/plain`` wherever its kernel is
    gone (nbviewer, GitHub, nbconvert, no widgets): what it is and how to reopen it,
    where ipywidgets' repr said nothing useful. The widget view is anywidget's, as is."""
    from IPython.core.formatters import DisplayFormatter

    from r3nb.kernel.panel import ChatPanel

    with unreachable_client() as client:
        panel = ChatPanel(conversation_id="0123456789abcdef", client=client)
        # What the kernel's display hook sends for the cell's result.
        data, _metadata = DisplayFormatter().format(panel)
        assert data["text/plain"] == (
            "r3nb chat panel (conversation 0123456789abcdef): it shows only while the "
            "kernel that opened it runs. To reopen it, run `%load_ext r3nb` and "
            "`%r3nb --conversation 0123456789abcdef`; the conversation is saved."
        )
        view = data["application/vnd.jupyter.widget-view+json"]
        assert view["model_id"] == panel.model_id
        assert set(data) == {"text/plain", "application/vnd.jupyter.widget-view+json"}
        # A draft (no conversation saved yet): plain %r3nb brings a panel back.
        draft, _ = DisplayFormatter().format(ChatPanel(client=client))
        assert draft["text/plain"].startswith("r3nb chat panel: it shows only while")
        assert "`%r3nb`;" in draft["text/plain"]


def test_relayed_calls_share_a_few_threads_and_each_is_answered() -> None:
    """The comm relay ran each request on a new thread; polls from every panel now share
    a few, and every request still gets its answer."""
    import socket
    import threading

    from r3nb.kernel.client import ServerClient
    from r3nb.kernel.panel import ChatPanel

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ServerClient(f"http://127.0.0.1:{port}/r3nb/api/", "secret", timeout=2)
    answered = threading.Semaphore(0)
    answers: list[dict[str, object]] = []
    threads: set[threading.Thread] = set()  # the objects, kept: no identity is reused
    try:
        panel = ChatPanel(client=client)

        def send(msg: dict[str, object], buffers: object = None) -> None:
            answers.append(msg)
            threads.add(threading.current_thread())
            answered.release()

        panel.send = send  # type: ignore[method-assign]
        for i in range(40):
            panel._on_custom(panel, {"type": "request", "id": str(i), "path": "health"}, [])
        for _ in range(40):
            assert answered.acquire(timeout=30)
        assert len(threads) <= 4, f"{len(threads)} threads answered 40 calls"
        assert sorted(int(str(a["id"])) for a in answers) == list(range(40))
        assert {a["status"] for a in answers} == {502}  # nothing listens: a clear error each
    finally:
        client.close()
