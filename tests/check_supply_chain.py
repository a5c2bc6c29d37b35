"""Fail when a compromised litellm release or its dropped .pth payload is installed.

litellm 1.82.7 and 1.82.8 were published by an attacker; 1.82.8 also dropped a
``litellm_init.pth`` file that runs at every interpreter start.
"""

from __future__ import annotations

import site
import sys
from importlib.metadata import version
from pathlib import Path

BAD_VERSIONS = {"1.82.7", "1.82.8"}


def main() -> int:
    problems = []
    installed = version("litellm")
    if installed in BAD_VERSIONS:
        problems.append(f"litellm {installed} is a compromised release")
    for folder in {*site.getsitepackages(), site.getusersitepackages(), *sys.path}:
        candidate = Path(folder) / "litellm_init.pth"
        if candidate.exists():
            problems.append(f"{candidate} exists (payload of a compromised litellm)")
    for problem in problems:
        print(f"supply chain: {problem}", file=sys.stderr)
    if not problems:
        print(f"supply chain: litellm {installed} ok, no litellm_init.pth")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
