"""SPU process entry point: ``python -m rillet.broker.spu --cluster NAME --home DIR --spu-id N``.

Started by the SC (one OS process per SPU). Order of start-up matters: the client
socket listens before the SPU registers, so once the SC publishes a partition as
Online its leader already accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from rillet.ipc.names import ClusterPaths
from rillet.ipc.transport import prepare_runtime_dir, start_unix_server

from .server import ControlLink, SpuConnection
from .service import SpuService

CONNECT_ATTEMPTS = 50      # x 0.1 s: the SC listens before it spawns SPUs, so this is slack
# uvloop runs the SPU's event loop when it is installed (the ``fast`` extra), unless this
# environment variable says ``asyncio``: the SPU's CPU per W3 record went from 47 to 40 us
# with it (README, Architecture). Without it, asyncio's own loop does the same work.
EVENT_LOOP_ENV = "RILLET_EVENT_LOOP"


def event_loop_factory():
    """``uvloop.new_event_loop`` when uvloop is importable and not turned off, else None (asyncio's)."""
    if os.environ.get(EVENT_LOOP_ENV, "").lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def run_spu(paths: ClusterPaths, spu_id: int) -> int:
    log = logging.getLogger(f"spu-{spu_id}")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    service = SpuService(spu_id, paths, log)
    prepare_runtime_dir(paths.runtime_dir)
    socket_path = paths.spu_socket(spu_id)
    server = await start_unix_server(lambda: SpuConnection(service, log), socket_path)
    link = ControlLink(service, log, stop)
    try:
        for attempt in range(CONNECT_ATTEMPTS):
            try:
                await loop.create_unix_connection(lambda: link, str(paths.sc_socket))
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            log.error("could not reach the SC at %s", paths.sc_socket)
            return 1
        tasks = [asyncio.ensure_future(link.report_loop()), asyncio.ensure_future(link.expire_loop())]
        log.info("SPU %d serving on %s", spu_id, socket_path)
        await stop.wait()
        for task in tasks:
            task.cancel()
    finally:
        server.close()
        link.close()
        service.close()
        socket_path.unlink(missing_ok=True)
        log.info("SPU %d stopped", spu_id)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rillet-spu", description="run one rillet SPU (started by the SC)")
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--home", required=True)
    parser.add_argument("--spu-id", type=int, required=True)
    args = parser.parse_args(argv)
    os.umask(0o077)     # logs, pid file, data and checkpoints: this user's only
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    paths = ClusterPaths.for_cluster(args.cluster, args.home)
    factory = event_loop_factory()
    logging.getLogger(f"spu-{args.spu_id}").info("event loop: %s", "uvloop" if factory else "asyncio")
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(run_spu(paths, args.spu_id))
