"""SPU process entry point: ``python -m rillet.broker.spu --cluster NAME --home DIR --spu-id N``.

Started by the SC (one OS process per SPU). Order of start-up matters: the client
socket listens before the SPU registers, so once the SC publishes a partition as
Online its leader already accepts connections.

The SPU does not need its SC to serve: when the control connection is lost it keeps
serving produce and fetch for what it leads, keeps following its leaders, and lets
its leaders change their in-sync sets on their own (reported to the next SC). It
connects again with a backoff bounded by RECONNECT_MAX_S and registers with the new
SC, which adopts it. It only stops (so no SPU outlives its cluster) when no SC has
answered for ``RILLET_SC_LOST_TIMEOUT_S`` (default 60 s) and no supervisor of the
cluster is alive to bring one back, or when told to (Shutdown, SIGTERM).

Three tasks besides the sockets: ``control_loop`` keeps the SC connected; the main
loop (broker/spu/loop.py ``run_control``) drains the events replicas and the link put
in the SPU's queue and carries out what ``decide`` (broker/spu/control.py) says.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from rillet.ipc import env
from rillet.ipc.errors import InvalidArgument
from rillet.ipc.names import ClusterPaths
from rillet.ipc.transport import prepare_runtime_dir, start_unix_server

from .control import Timings, retention_check_s
from .loop import run_control
from .produce_ring import RingListener
from .scheduling import Scheduling, setting_from
from .server import ControlLink, SpuConnection
from .service import SpuService

RECONNECT_MIN_S = 0.02     # first retry after losing the SC: a standby SC listens within tens of ms
RECONNECT_MAX_S = 0.2      # the backoff doubles up to this: a failed connect to a missing socket costs ~10 µs
DEFAULT_SC_LOST_TIMEOUT_S = 60.0


def sc_lost_timeout_s(environ=os.environ) -> float:
    """Without an SC for this long and with no supervisor alive, the cluster is gone: stop.
    ``RILLET_SC_LOST_TIMEOUT_S`` (seconds, > 0) changes it; a bad value is reported and ignored."""
    raw = environ.get("RILLET_SC_LOST_TIMEOUT_S")
    if raw is None:
        return DEFAULT_SC_LOST_TIMEOUT_S
    try:
        value = float(raw)
        if value > 0:
            return value
    except ValueError:
        pass
    logging.getLogger("spu").warning("RILLET_SC_LOST_TIMEOUT_S=%r is not a positive number of seconds; using %g",
                                     raw, DEFAULT_SC_LOST_TIMEOUT_S)
    return DEFAULT_SC_LOST_TIMEOUT_S


async def control_loop(link: ControlLink, paths: ClusterPaths, stop: asyncio.Event, log: logging.Logger) -> None:
    """Keep the control link connected: connect, wait for it to drop, connect again.
    (Whether to give up on a lost SC is the main loop's decision: broker/spu/control.py.)"""
    loop = asyncio.get_running_loop()
    delay = RECONNECT_MIN_S
    connected_once = False
    while not stop.is_set():
        try:
            await loop.create_unix_connection(lambda: link, str(paths.sc_socket))
        except OSError:
            pass
        else:
            if connected_once:
                log.info("control link to the SC connected again")
            connected_once = True
            delay = RECONNECT_MIN_S
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait([link.closed, stopped], return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if stop.is_set():
                return
            log.warning("control connection to the SC closed; serving on and reconnecting")
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except asyncio.TimeoutError:
            pass
        delay = min(delay * 1.5, RECONNECT_MAX_S)


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
    scheduling = Scheduling(setting_from(os.environ, log), log)   # on the event loop's thread
    log.info("scheduling: %s", scheduling.setting)
    prepare_runtime_dir(paths.runtime_dir)
    socket_path = paths.spu_socket(spu_id)
    server = await start_unix_server(lambda: SpuConnection(service, log), socket_path)
    if _rings_taken(log):
        service.ring_listener = RingListener(str(paths.spu_ring_socket(spu_id)), log, scheduling)
    link = ControlLink(service, log, stop)
    from rillet.broker.launcher import supervisor_pid
    timings = Timings(retention_check_s=retention_check_s(), sc_lost_timeout_s=sc_lost_timeout_s())
    try:
        tasks = [asyncio.ensure_future(control_loop(link, paths, stop, log)),
                 asyncio.ensure_future(run_control(service.events, service, link, stop, log, timings,
                                                   supervised=lambda: supervisor_pid(paths) is not None))]
        log.info("SPU %d serving on %s", spu_id, socket_path)
        await stop.wait()
        for task in tasks:
            task.cancel()
    finally:
        server.close()
        if service.ring_listener is not None:
            service.ring_listener.close()
        link.close()
        service.close()
        socket_path.unlink(missing_ok=True)
        log.info("SPU %d stopped", spu_id)
    return 0


def _rings_taken(log: logging.Logger) -> bool:
    """RILLET_PRODUCE_RING as clients read it (ipc/env.py); a value it does not take is logged and
    rings are taken, since a bad switch must not keep an SPU from starting."""
    try:
        return env.switch("RILLET_PRODUCE_RING")
    except InvalidArgument as exc:
        log.error("%s; taking produce rings", exc)
        return True


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
    log = logging.getLogger(f"spu-{args.spu_id}")
    log.info("event loop: %s", "uvloop" if factory else "asyncio")
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(run_spu(paths, args.spu_id))
