"""Samples ``GET <url>`` latency every ``--every`` seconds from its own process (so the
benchmark client's own loop lag never shows up as server latency); prints JSON ms list.

    python bench/sampler.py URL TOKEN DURATION [--every 0.02]
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from urllib.parse import urlsplit


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("token")
    p.add_argument("duration", type=float)
    p.add_argument("--every", type=float, default=0.02)
    a = p.parse_args()
    u = urlsplit(a.url)
    con = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    headers = {"Authorization": f"token {a.token}"}
    out: list[float] = []
    errors = 0
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < a.duration:
        due = start + i * a.every
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        i += 1
        t = time.perf_counter()
        try:
            con.request("GET", u.path, headers=headers)
            r = con.getresponse()
            r.read()
            if r.status != 200:
                errors += 1
        except (OSError, http.client.HTTPException):
            errors += 1
            con.close()
            con = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
            continue
        out.append((time.perf_counter() - t) * 1000)
    json.dump({"ms": out, "errors": errors}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
