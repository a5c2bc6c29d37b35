"""The widget's own unit tests (``js/test``, node's test runner with jsdom), run as one
pytest test so that xdist fits their ~30 s of one core beside the Python tests, instead
of ``make test`` running them before pytest starts. ``make js-test`` still runs them
alone, with the lint, the type check and the bundle check."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parent.parent / "js"


@pytest.fixture
def node_modules() -> Path:
    """The widget's installed dev dependencies (``make js`` installs them)."""
    path = JS / "node_modules"
    if not (path / ".package-lock.json").exists() or shutil.which("npm") is None:
        message = "the widget's tests need node, npm and js/node_modules: run `make js`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def test_the_widget_unit_tests_pass(node_modules: Path) -> None:
    result = subprocess.run(
        ["npm", "test", "--silent"],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert "# fail 0" in result.stdout, result.stdout[-3000:]
