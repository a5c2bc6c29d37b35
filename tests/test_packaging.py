"""The wheel carries what a user's install needs: the widget bundle and the config file
that enables the server extension."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_the_widget_bundle_and_enables_the_extension(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("r3nb-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "r3nb/static/widget.js" in names
    assert "r3nb/static/widget.css" in names
    config = [n for n in names if n.endswith("jupyter_server_config.d/r3nb.json")]
    assert config
    assert config[0].startswith("r3nb-")
    assert ".data/data/etc/jupyter/" in config[0]
    bundle = zipfile.ZipFile(wheel).read("r3nb/static/widget.js")
    assert bundle == (REPO / "r3nb" / "static" / "widget.js").read_bytes()
    assert b"export" in bundle
    assert len(bundle) > 50_000
    assert not any(n.startswith(("tests/", "js/", "bench/")) for n in names)
