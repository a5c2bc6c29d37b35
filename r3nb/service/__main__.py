"""``r3nb-service`` / ``python -m r3nb.service``: run the hub service until SIGTERM/SIGINT.

A stop signal ends live replies whole (``Engine.interrupt``, as a single-user server
does) before the store closes; a ``kill -9`` leaves them to the start-up sweep.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys

from .app import ConfigError, Service, ServiceConfig

log = logging.getLogger("r3nb.service")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="r3nb-service", description=__doc__)
    parser.add_argument("--config", help="JSON file of engine settings (or R3NB_SERVICE_CONFIG)")
    parser.add_argument("--ip", help="address to listen on (default: JUPYTERHUB_SERVICE_URL's)")
    parser.add_argument("--port", type=int, help="port (default: JUPYTERHUB_SERVICE_URL's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[r3nb-service %(levelname)s] %(message)s")
    try:
        config = ServiceConfig.from_environment(args.config, args.ip, args.port)
    except ConfigError as e:
        print(f"r3nb-service: {e}", file=sys.stderr)
        return 2
    asyncio.run(_run(config))
    return 0


async def _run(config: ServiceConfig) -> None:
    service = Service(config)
    service.start()
    # Start-up's objects out of full garbage collections, as a server does
    # (``R3nbApp.freeze_gc_at_start``): this process is the service's alone.
    gc.freeze()
    assert service.engine is not None
    log.info(
        "listening on %s:%s%s, store %s",
        config.ip,
        config.port,
        config.prefix,
        service.engine.store.path,
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await service.engine.interrupt("interrupted: the r3nb service was stopped")
    await service.stop()


if __name__ == "__main__":
    sys.exit(main())
