"""The wheel carries what a user's install needs: the widget bundle, the config file
that enables the server extension, and the prebuilt JupyterLab extension (Code → cell),
which JupyterLab and Notebook 7 find and enable with no build step."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import r3nb

REPO = Path(__file__).resolve().parents[1]
LABEXTENSION = REPO / "r3nb" / "labextension"
SHARED = "share/jupyter/labextensions/r3nb/"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(out)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("r3nb-*.whl")
    return path


def test_wheel_ships_the_widget_bundle_and_enables_the_extension(wheel: Path) -> None:
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
    assert not any(n.startswith(("tests/", "js/", "bench/", "labextension/")) for n in names)


def test_wheel_ships_the_prebuilt_jupyterlab_extension_listed_as_enabled(
    wheel: Path, tmp_path: Path
) -> None:
    archive = zipfile.ZipFile(wheel)
    data = f"r3nb-{r3nb.__version__}.data/data/"
    shipped = {
        n[len(data + SHARED) :]: n for n in archive.namelist() if n.startswith(data + SHARED)
    }
    built = {p.relative_to(LABEXTENSION).as_posix() for p in LABEXTENSION.rglob("*") if p.is_file()}
    assert set(shipped) == built | {"install.json"}
    for name in built:  # the committed build, byte for byte
        assert archive.read(shipped[name]) == (LABEXTENSION / name).read_bytes(), name

    # One version everywhere: the Python package, the extension's sources, its build.
    meta = json.loads((LABEXTENSION / "package.json").read_text())
    source_meta = json.loads((REPO / "labextension" / "package.json").read_text())
    assert meta["name"] == "r3nb"
    assert meta["version"] == source_meta["version"] == r3nb.__version__
    source = (REPO / "labextension" / "src" / "index.js").read_text()
    assert f'const VERSION = "{r3nb.__version__}";' in source
    # The build is of these sources' metadata (a stale build after a package.json change).
    assert {k: v for k, v in meta.items() if k != "jupyterlab"} == {
        k: v for k, v in source_meta.items() if k != "jupyterlab"
    }
    assert (LABEXTENSION / meta["jupyterlab"]["_build"]["load"]).is_file()

    # Installed where pip puts the wheel's shared data, JupyterLab lists it, enabled.
    archive.extractall(tmp_path / "wheel", [n for n in archive.namelist() if n.startswith(data)])
    env = {
        **os.environ,
        "JUPYTER_PATH": str(tmp_path / "wheel" / data / "share" / "jupyter"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
    }
    listing = subprocess.run(
        [sys.executable, "-m", "jupyterlab.labextensions", "list"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    out = re.sub(r"\x1b\[[0-9;]*m", "", listing.stdout + listing.stderr)
    assert f"r3nb v{r3nb.__version__} enabled OK (python, r3nb)" in out, out
