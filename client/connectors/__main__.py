"""One connector process: ``python -m rillet.connectors --cluster C --home H --name NAME``.

Started and restarted by the SC (broker/sc/connectors.py); reads its stored config,
imports its type, substitutes its secrets and runs it until SIGTERM. Exit codes tell the
SC what to do next: 0 the source ended (not restarted), 3 it must not be restarted (a bad
config, ``StopConnector``), anything else (143 after a SIGTERM, a crash) is restarted with
backoff unless the cluster is stopping.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from rillet.ipc.errors import ConnectorConfigError, RilletError
from rillet.ipc.names import ClusterPaths

from . import _store
from ._config import parse_config, redact, resolve_secrets, with_direction
from ._registry import known_types, load_builtins, load_module, registered
from ._runtime import Context, StopConnector, run_sink, run_source

EXIT_DONE = 0
EXIT_FAILED = 3
EXIT_STOPPED = 128 + signal.SIGTERM   # stopped by a signal: restarted, unless the cluster is stopping


class _RedactingFormatter(logging.Formatter):
    """Takes every secret value out of each line, tracebacks included."""

    def __init__(self, fmt: str, secrets: dict[str, str]) -> None:
        super().__init__(fmt)
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self.secrets)


def _load(paths: ClusterPaths, name: str, log: logging.Logger):
    stored = _store.load(paths, name)
    load_builtins()
    raw = stored["config"]
    module = (raw.get("python") or {}).get("module")
    if module:
        load_module(module, stored.get("base_dir"))
    cfg = parse_config(raw, known_types=known_types())
    kind = registered(cfg.type)
    if kind is None:
        raise ConnectorConfigError(f"meta.type: {cfg.type!r} is not registered by python.module {module!r}")
    cfg = with_direction(cfg, kind.direction)
    section = resolve_secrets(cfg.section, stored.get("secrets") or {})
    return cfg, kind, section


async def _run(cfg, kind, ctx, paths: ClusterPaths) -> int:
    from rillet import Fluvio
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    fluvio = await asyncio.to_thread(Fluvio.connect, paths.cluster, home=str(paths.home))
    try:
        if kind.direction == "sink":
            await run_sink(kind, ctx, fluvio, stop)
        else:
            await run_source(kind, ctx, fluvio, stop)
        return EXIT_STOPPED if stop.is_set() else EXIT_DONE
    finally:
        fluvio.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rillet-connector", description="run one connector (started by the SC)")
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--home", required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    os.umask(0o077)
    paths = ClusterPaths.for_cluster(args.cluster, args.home)
    try:
        secrets = _store.load(paths, args.name).get("secrets") or {}
    except (OSError, ValueError) as exc:
        print(f"connector {args.name}: cannot read its config: {exc}", file=sys.stderr)
        return EXIT_FAILED
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter(f"%(asctime)s connector {args.name} %(levelname)s %(message)s", secrets))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    for noisy in ("httpx", "httpcore"):          # a line per request would drown the log
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log = logging.getLogger(f"connector.{args.name}")
    try:
        cfg, kind, section = _load(paths, args.name, log)
    except ConnectorConfigError as exc:
        log.error("config refused: %s", exc)
        return EXIT_FAILED
    log.info("starting %s %s (version %s) on topic %s, pid %d", kind.direction, cfg.type, cfg.version, cfg.topic,
             os.getpid())
    ctx = Context(name=cfg.name, topic=cfg.topic, config=section, log=log, connector=cfg)
    try:
        return asyncio.run(_run(cfg, kind, ctx, paths))
    except StopConnector as exc:
        log.error("stopped for good: %s", exc)
        return EXIT_FAILED
    except RilletError as exc:
        log.error("failed: %s", exc)
        return 1
    except Exception:
        log.exception("crashed")
        return 1


if __name__ == "__main__":
    sys.exit(main())
