"""A real JupyterLab subprocess and Playwright helpers for the browser tests.

``JupyterLab`` starts ``python -m jupyterlab`` on 127.0.0.1 with fresh workspace, settings,
runtime, config and data dirs, the news/update checks off, ``window.jupyterapp`` exposed
(JupyterLab and Notebook 7) and r3nb configured through ``--R3nbApp.*`` flags. It always
stops: ``POST /api/shutdown`` (kernels go with it), then SIGTERM, then SIGKILL of the
process group it started (its own session, so kernels orphaned by a crash go too).

The page helpers drive the UI the way a person does (type, Enter, click), and wait on
the DOM hooks the widget exposes (``data-status``, ``data-r3nb-ready``, ...), never on
sleeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import nbformat

from tests.servers import JupyterServer, provider_settled

CHROMIUM = "/usr/bin/chromium"
#: r3nb's JupyterLab extension as built and committed (``make labextension``). An editable
#: install copies the wheel's shared data once, as it was then, so each lab finds the
#: tree's build through a link in its own data dir, put first on ``JUPYTER_PATH`` (the
#: first ``labextensions`` folder JupyterLab and Notebook 7 look in), as ``pip install
#: r3nb`` would through ``share/jupyter/labextensions/r3nb``.
LABEXTENSION = Path(__file__).resolve().parents[1] / "r3nb" / "labextension"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    # Nothing but 127.0.0.1 is reachable: every other request goes to a proxy that is
    # not there (loopback bypasses proxies), so it fails at once whatever its host,
    # name or address. ``Guard`` counts them. (Routing every request through
    # Playwright instead, as before, cost ~10% of each JupyterLab load's CPU and
    # turned the browser's cache off.)
    "--proxy-server=http://127.0.0.1:9",
]
#: The front ends r3nb's notebook actions are tested in (a module parametrizes its page).
FRONT_ENDS = ("lab", "notebook7")
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
#: Silences JupyterLab's "Would you like to get notified about official news?" toast.
NOTIFICATION_SETTINGS = {"fetchNews": "false", "checkForUpdates": False}

#: Every rendered message of the panel on a page (Notebook 7 keeps a second, detached view
#: out of the document, so a query only finds the visible one).
MESSAGES = ".r3nb-root [data-r3nb-role=message]"
ASSISTANT = MESSAGES + "[data-role=assistant]"


def write_notebook(path: Path, cells: list[str]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(nb, str(path))
    return path


def panel_notebook(path: Path, conversation_id: str) -> Path:
    """A notebook whose two cells show the panel on ``conversation_id``."""
    return write_notebook(path, ["%load_ext r3nb", f"%r3nb --conversation {conversation_id}"])


class JupyterLab(JupyterServer):
    """One ``jupyter lab`` process for a test module: the same process handling as a
    plain server (ports, token, API URLs, log), with JupyterLab's own start and stop."""

    def __init__(self, workdir: Path, r3nb: dict[str, Any]) -> None:
        super().__init__(workdir, r3nb)
        self.root = workdir / "root"
        self.log_path = workdir / "jupyterlab.log"

    def lab_url(self, notebook: str, workspace: str) -> str:
        """A notebook in its own JupyterLab workspace, so two pages never restore each
        other's tabs (and never share a kernel by accident)."""
        return f"{self.url}lab/workspaces/{workspace}/tree/{notebook}?token={self.token}"

    def notebook7_url(self, notebook: str) -> str:
        return f"{self.url}notebooks/{notebook}?token={self.token}"

    def front_end_url(self, front_end: str, notebook: str) -> str:
        """``notebook`` in one of the FRONT_ENDS (in JupyterLab, in a workspace named
        after it)."""
        if front_end == "notebook7":
            return self.notebook7_url(notebook)
        assert front_end == "lab", front_end
        return self.lab_url(notebook, "ws" + notebook.removesuffix(".ipynb"))

    # --- lifecycle -------------------------------------------------------------------

    def start(self, timeout: float = 90) -> JupyterLab:
        dirs = {
            name: self.workdir / name
            for name in ("config", "runtime", "data", "workspaces", "settings", "root")
        }
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        notification = dirs["settings"] / "@jupyterlab" / "apputils-extension"
        notification.mkdir(parents=True, exist_ok=True)
        (notification / "notification.jupyterlab-settings").write_text(
            json.dumps(NOTIFICATION_SETTINGS)
        )
        (dirs["data"] / "labextensions").mkdir(exist_ok=True)
        link = dirs["data"] / "labextensions" / "r3nb"
        if not link.is_symlink():
            link.symlink_to(LABEXTENSION, target_is_directory=True)
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(dirs["config"]),
            "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
            "JUPYTER_DATA_DIR": str(dirs["data"]),
            # Searched before everything else: in a virtualenv Jupyter prefers the env's
            # share/jupyter to the user's data dir, and the editable install copied the
            # extension there as it was built then (the link above is the tree's build).
            "JUPYTER_PATH": str(dirs["data"]),
            "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]),
            "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self.env = env
        args = [
            sys.executable, "-m", "jupyterlab", "--no-browser",
            f"--ServerApp.port={self.port}", "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port_retries=0", "--ServerApp.allow_root=True",
            "--ServerApp.open_browser=False", f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.expose_app_in_browser=True",
            "--JupyterNotebookApp.expose_app_in_browser=True",
        ]  # fmt: skip
        for key, value in self.r3nb.items():
            # A Python literal: traitlets reads a Dict or List from the command line with
            # ast.literal_eval, which takes JSON's true/false/null for plain strings.
            text = value if isinstance(value, str) else repr(value)
            args.append(f"--R3nbApp.{key}={text}")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args,
                env=env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kernels included
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited:\n{self.log()[-4000:]}")
            try:
                ok = httpx.get(self.url + "api/status", headers=self.headers, timeout=2)
                health = httpx.get(self.api + "health", headers=self.headers, timeout=2)
                # Wait for litellm's import too (a background thread at start-up): while
                # it holds the GIL, the server's loop stalls for hundreds of milliseconds
                # and the first streams arrive in bursts.
                if (
                    ok.status_code == 200
                    and health.status_code == 200
                    and provider_settled(health.json())
                ):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)  # polling a port that is not up yet: nothing to wait on
        self.stop()
        raise TimeoutError(f"jupyter lab not ready:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            httpx.post(self.url + "api/shutdown", headers=self.headers, timeout=10)
            proc.wait(timeout=20)
        except (httpx.HTTPError, subprocess.TimeoutExpired):
            pass
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
        # Whatever is left of the group this process led (kernels after a crash).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(timeout=10)

    # --- the r3nb HTTP API, with the token ----------------------------------------------

    def call(self, method: str, path: str, body: Any = None) -> Any:
        r = httpx.request(method, self.api + path, json=body, headers=self.headers, timeout=30)
        assert 200 <= r.status_code < 300, (r.status_code, r.text)
        return r.json()

    def create_conversation(self, title: str) -> str:
        return str(self.call("POST", "conversations", {"title": title})["conversation"]["id"])

    def messages(self, cid: str) -> list[dict[str, Any]]:
        return list(self.call("GET", f"conversations/{cid}")["messages"])

    def message(self, cid: str, mid: str) -> dict[str, Any]:
        for m in self.messages(cid):
            if m["id"] == mid:
                return m
        raise KeyError(mid)

    def shutdown_kernels(self) -> None:
        """Shut down every session and kernel (a module's, when the lab is shared), so
        none of them competes with the next module's timings."""
        with httpx.Client(headers=self.headers, timeout=30) as client:
            for session in client.get(self.url + "api/sessions").json():
                client.delete(f"{self.url}api/sessions/{session['id']}")
            for kernel in client.get(self.url + "api/kernels").json():
                client.delete(f"{self.url}api/kernels/{kernel['id']}")

    def interrupt(self, kernel_id: str) -> None:
        r = httpx.post(
            f"{self.url}api/kernels/{kernel_id}/interrupt", headers=self.headers, timeout=30
        )
        assert r.status_code == 204, (r.status_code, r.text)


# --- outside requests and dialogs -------------------------------------------------------


@contextlib.contextmanager
def running_lab(workdir: Path, provider_url: str, **r3nb: Any) -> Iterator[JupyterLab]:
    """A started JupyterLab whose r3nb answers with the test provider (model ``fake``,
    the default; no rate limit), stopped afterwards even when the test fails. ``r3nb``
    adds or overrides traits; ``models`` entries are added beside ``fake``."""
    models = {
        "fake": {"model": "openai/fake", "api_base": provider_url, "api_key": "sk-x"},
        **r3nb.pop("models", {}),
    }
    config = {
        "db_path": str(workdir / "r3nb.duckdb"),
        "models": models,
        "default_model": "fake",
        "rate_limit_per_minute": 0,
        **r3nb,
    }
    server = JupyterLab(workdir, config)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@dataclass
class Guard:
    """Counts what a page must never do: requests to any host but 127.0.0.1, dialogs."""

    blocked: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def on_request(self, request: Any) -> None:
        """A request the page made to anywhere but 127.0.0.1 (``CHROMIUM_ARGS``' proxy
        lets none of them out)."""
        host = urlsplit(request.url).hostname or ""
        scheme = urlsplit(request.url).scheme
        if scheme in ("http", "https", "ws", "wss") and host != "127.0.0.1":
            self.blocked.append(request.url)

    def on_dialog(self, dialog: Any) -> None:
        if dialog.type == "beforeunload":  # JupyterLab asks before leaving a dirty notebook
            dialog.accept()
            return
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def new_page(self, browser: Any) -> Any:
        """A page in its own context (its own window). Pages that share a context are
        tabs of one window in headless Chromium: only the front one gets animation
        frames at full rate (measured: 13 frames in 2 s for the tab behind), which would
        starve the panel's rendering in the page that is not in front."""
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        context.set_default_timeout(30_000)
        context.add_init_script("window.__pwned = 0;")
        context.on("request", self.on_request)
        page = context.new_page()
        page.on("dialog", self.on_dialog)
        return page


# --- page helpers -----------------------------------------------------------------------

KERNEL_IDLE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = w && w.sessionContext?.session?.kernel;
  return !!(w && w.content && w.context?.isReady && kernel
            && kernel.connectionStatus === 'connected' && kernel.status === 'idle');
}"""

#: The id of the newest assistant message not in `before` (or null).
NEW_ASSISTANT = """(before) => {
  const els = [...document.querySelectorAll("ASSISTANT")].reverse();
  const el = els.find((e) => e.dataset.messageId && !before.includes(e.dataset.messageId));
  return el ? el.dataset.messageId : null;
}""".replace("ASSISTANT", ASSISTANT)

#: Records every distinct text length of every assistant message, every 10 ms, into
#: window.__r3nbLengths[id] (a page-side sampler: no round trip per sample).
SAMPLER = """() => {
  if (window.__r3nbSampler) return;
  window.__r3nbLengths = {};
  window.__r3nbResponding = {};
  window.__r3nbSampler = setInterval(() => {
    for (const el of document.querySelectorAll("ASSISTANT")) {
      const id = el.dataset.messageId;
      const content = el.querySelector('.r3nb-content');
      if (!id || !content) continue;
      const n = content.textContent.length;
      const seen = (window.__r3nbLengths[id] ||= []);
      if (seen[seen.length - 1] !== n) seen.push(n);
      if (el.querySelector('.r3nb-responding')) window.__r3nbResponding[id] = true;
    }
  }, 10);
}""".replace("ASSISTANT", ASSISTANT)


def open_notebook(page: Any, url: str, *, timeout: float = 60_000) -> None:
    """Open a notebook page and wait until its kernel is connected and idle."""
    page.goto(url)
    page.wait_for_function("() => !!window.jupyterapp", timeout=timeout)
    page.wait_for_function(KERNEL_IDLE, timeout=timeout)


#: Saves an empty conversation through the API, from the page (its token and XSRF cookie).
CREATE_CONVERSATION = """async (title) => {
  const config = JSON.parse(document.getElementById('jupyter-config-data').textContent);
  const headers = { 'Content-Type': 'application/json' };
  if (config.token) headers.Authorization = `token ${config.token}`;
  const xsrf = document.cookie.match(/(?:^|; )_xsrf=([^;]*)/);
  if (xsrf) headers['X-XSRFToken'] = decodeURIComponent(xsrf[1]);
  const r = await fetch(`${config.baseUrl}r3nb/api/conversations`, {
    method: 'POST', credentials: 'same-origin', headers, body: JSON.stringify({ title }),
  });
  return (await r.json()).conversation.id;
}"""
_created = 0


def new_conversation(page: Any) -> str:
    """A fresh, saved, empty conversation, open in the panel: New (a draft, saved only by
    its first message), then one saved through the API and chosen in the picker (found
    with its search box, which reloads the list at once)."""
    global _created
    page.locator(".r3nb-root .r3nb-new").click()
    page.wait_for_function(
        "() => { const s = document.querySelector('.r3nb-root .r3nb-conversations');"
        " return s.value === '' && s.selectedOptions[0]?.textContent === 'New conversation'; }"
    )
    _created += 1
    title = f"fresh {_created} {page.evaluate('() => Math.random().toString(36).slice(2)')}"
    cid = str(page.evaluate(CREATE_CONVERSATION, title))
    search = page.locator(".r3nb-root .r3nb-search")
    search.fill(title)
    search.press("Enter")
    page.wait_for_function(
        "(id) => [...document.querySelector('.r3nb-root .r3nb-conversations').options]"
        ".some((o) => o.value === id)",
        arg=cid,
    )
    page.locator(".r3nb-root .r3nb-conversations").select_option(cid)
    search.fill("")
    search.press("Enter")
    page.wait_for_function(
        "(id) => document.querySelector('.r3nb-root .r3nb-conversations').value === id", arg=cid
    )
    return cid


def kernel_id(page: Any) -> str:
    return str(
        page.evaluate(
            "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.id"
        )
    )


def run_all_and_wait_for_panel(page: Any, *, timeout: float = 60_000) -> Any:
    """Run every cell (without awaiting the command: it resolves only when all cells end)
    and wait for the panel to say it is ready. Returns the panel's root locator."""
    page.evaluate("() => { void window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    root = page.locator(".r3nb-root[data-r3nb-ready='1']")
    root.wait_for(state="visible", timeout=timeout)
    return root


def save_notebook(page: Any) -> None:
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_function(
        "() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=30_000
    )


def assistant_ids(page: Any) -> list[str]:
    return list(page.eval_on_selector_all(ASSISTANT, "els => els.map((e) => e.dataset.messageId)"))


def send(page: Any, prompt: str, *, timeout: float = 30_000) -> str:
    """Type `prompt` into the panel, press Enter, return the new assistant message id."""
    before = assistant_ids(page)
    box = page.locator(".r3nb-root .r3nb-input")
    box.wait_for(state="visible")
    box.fill(prompt)
    # The input stays editable while a reply streams; Send waits until it has ended.
    page.wait_for_function(
        "() => !document.querySelector('.r3nb-root .r3nb-send').disabled", timeout=timeout
    )
    box.press("Enter")
    handle = page.wait_for_function(NEW_ASSISTANT, arg=before, timeout=timeout)
    return str(handle.json_value())


def message(page: Any, mid: str) -> Any:
    return page.locator(f"{MESSAGES}[data-message-id='{mid}']")


def wait_status(page: Any, mid: str, status: str, *, timeout: float = 30_000) -> None:
    page.wait_for_function(
        "([sel, status]) => { const el = document.querySelector(sel);"
        " return !!el && el.dataset.status === status; }",
        arg=[f"{MESSAGES}[data-message-id='{mid}']", status],
        timeout=timeout,
    )


def content_text(page: Any, mid: str) -> str:
    return str(message(page, mid).locator(".r3nb-content").text_content() or "")


def start_sampler(page: Any) -> None:
    page.evaluate(SAMPLER)


def sampled_lengths(page: Any, mid: str) -> list[int]:
    return list(page.evaluate("(id) => (window.__r3nbLengths || {})[id] || []", mid))


def saw_responding(page: Any, mid: str) -> bool:
    return bool(page.evaluate("(id) => !!(window.__r3nbResponding || {})[id]", mid))


def words(text: str) -> str:
    """Whitespace-normalised text: markdown rendering turns newlines into spaces."""
    return " ".join(text.split())
