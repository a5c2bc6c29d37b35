"""Who else on the machine can read r3nb's database: nobody, unless an admin chose so.

Conversations hold whatever people pasted (code, data, secrets in tracebacks), so the
folder r3nb creates is 0700 and the DuckDB file 0600. DuckDB creates its write-ahead
log with the process umask (usually 0644) each time it starts a new one, and changing
the umask would change it for every file the Jupyter server writes (notebooks too), so
the folder's mode is the real protection; the WAL is tightened as soon as it is seen.
Files or folders that already exist keep their modes: an admin may have opened them on
purpose (a backup group). r3nb says so in the log and in ``GET health`` instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("r3nb.store")
_OTHERS = stat.S_IRWXG | stat.S_IRWXO


def prepare_folder(folder: Path) -> None:
    """Create ``folder`` (and missing parents) with the last component private."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)


def open_to_others(db_path: str) -> list[str]:
    """What of the store (folder, file, WAL) other users could read, in words."""
    found = []
    path = Path(db_path)
    for item in (path.parent, path, Path(db_path + ".wal")):
        with contextlib.suppress(OSError):
            mode = stat.S_IMODE(item.stat().st_mode)
            if mode & _OTHERS:
                kind = "folder" if item.is_dir() else "file"
                found.append(
                    f"the {kind} {item} is open to other users (mode {mode:04o}); "
                    f"run: chmod {'700' if item.is_dir() else '600'} {item}"
                )
    return found


def make_private(path: str) -> None:
    """0600 for a file r3nb (or DuckDB for it) just created."""
    with contextlib.suppress(OSError):
        os.chmod(path, 0o600)


class WalGuard:
    """Tightens the WAL each time DuckDB starts a new one: one ``stat`` (about a
    microsecond) after each store operation. Inode numbers are reused after a
    checkpoint deletes the WAL, so the mode itself is what is checked."""

    def __init__(self, db_path: str) -> None:
        self.wal = db_path + ".wal"

    def check(self) -> None:
        try:
            mode = os.stat(self.wal).st_mode
        except OSError:
            return
        if stat.S_IMODE(mode) & _OTHERS:
            make_private(self.wal)
