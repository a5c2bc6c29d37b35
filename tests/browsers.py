"""What every real-browser test module shares: Debian's Chromium (skipped where it is
missing, an error under CI), one browser and one request guard per module, and the
no-op replacements of pytest-jupyter's autouse fixtures.

A module imports the fixture functions (``from tests.browsers import _browser, ...``),
which makes the fixtures that module's own: the autouse replacements must not reach
other modules. Each is registered under the name given in its decorator.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab import CHROMIUM, CHROMIUM_ARGS, Guard


def require_chromium() -> Any:
    """Playwright's sync API, or skip the calling module (fail under CI)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):  # CI must run these: no browser there is a broken setup
            raise RuntimeError(
                f"{CHROMIUM} is missing (apt-get install chromium fonts-dejavu-core)"
            )
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
    return sync_api


@pytest.fixture(autouse=True, name="jp_asyncio_loop")
def _no_loop() -> None:
    """Replaces pytest-jupyter's autouse loop: it would adopt the loop Playwright's sync
    API keeps running in this thread, then fail to close it."""


@pytest.fixture(autouse=True, name="jp_server_cleanup")
def _no_cleanup() -> None:
    """No in-process ServerApp in browser modules (servers are subprocesses)."""


@pytest.fixture(scope="module", name="guard")
def _guard() -> Guard:
    """Blocks and counts every request not to 127.0.0.1, and every dialog."""
    return Guard()


@pytest.fixture(scope="module", name="browser")
def _browser() -> Iterator[Any]:
    """One headless Debian Chromium per module."""
    sync_api = require_chromium()
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()
