"""``tests.provider`` serving one fixed reply read from a file (a reply too long for a
command-line argument), e.g. markdown with paragraphs for the browser benchmark.

    python -m bench.provider_text --port N --text-file F
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from tests.provider import FakeProvider, Scenario, generated_word


def paragraphs(tokens: int, every: int = 60) -> str:
    """``tokens`` words like the generated replies, with a blank line every ``every``."""
    out = []
    for i in range(tokens):
        word = generated_word(i).rstrip()
        out.append(word + ("\n\n" if i % every == every - 1 else " "))
    return "".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--text-file", required=True)
    args = ap.parse_args()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    text = Path(args.text_file).read_text()
    provider = FakeProvider(Scenario(text=text), port=args.port)
    provider.start()
    print(provider.url, flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        provider.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
