"""Connectors as processes of the cluster: kept, started, restarted and stopped by the SC.

Why the SC: it already spawns and reaps SPUs and is the one process that always runs
while the cluster does (its supervisor brings it back within a second or two). Each
connector is its own OS process (``python -m rillet.connectors --cluster C --home H
--name N``) in the cluster's session, logging to ``logs/connector-<name>.log``; its config
is kept in ``sc/connectors/<name>.json`` (client/connectors/_store.py).

* Died (any exit but 0 and 3, any signal): started again after `restart_delay_s` (at
  once, then 0.2 s doubling while it keeps dying young, up to 10 s). Exit 0 (a source that ended): finished.
  Exit 3 (a config refused at start, ``StopConnector``): failed; not restarted.
* `cluster stop`: SIGTERM to each (a sink flushes its committed offsets), SIGKILL after
  STOP_WAIT_S; before the SPUs stop, while the SC still answers offset flushes.
* `cluster start`: every kept connector is started again, once its topic is Online (but
  not one that finished or failed: that is kept in its record until it is deleted).
* SC restart: connector processes still running are adopted (followed by pid; the
  supervisor, a child subreaper, reaps them), so a restarted SC neither doubles nor leaks
  one; an unknown one (deleted meanwhile) is killed. Restart counts start from 0 again.

The decisions (`after_exit`, `restart_delay_s`) are pure; this class carries them out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import psutil

from rillet.connectors import _store
from rillet.connectors._config import parse_config
from rillet.ipc import messages as m
from rillet.ipc.errors import ConnectorAlreadyExists, ConnectorConfigError, ConnectorNotFound
from rillet.ipc.metadata_table import PartitionStatus
from rillet.ipc.names import validate_name

from rillet.broker.sc import reconcile
from rillet.broker.sc.processes import alive, signal_quietly

FIRST_DELAY_S = 0.2
MAX_DELAY_S = 10.0
STABLE_S = 10.0            # a connector that ran this long before dying restarts at once-ish again
STOP_WAIT_S = 5.0
EXIT_DONE, EXIT_FAILED = 0, 3


def restart_delay_s(failures: int) -> float:
    """Delay before the next start after ``failures`` deaths in a row (each young): none
    for the first (a killed connector is back at once), then doubling from FIRST_DELAY_S
    up to MAX_DELAY_S, so one that keeps crashing costs little CPU."""
    if failures <= 1:
        return 0.0
    return min(FIRST_DELAY_S * 2 ** (failures - 2), MAX_DELAY_S)


def after_exit(code: int | None, lived_s: float, failures: int) -> tuple[str, int, float | None]:
    """(status, failures, delay before restart or None) once a connector's process ended.

    ``code`` is the exit code, negative for a signal, None when unknown (an adopted
    process: not our child, so its code is the supervisor's to reap).
    """
    if code == EXIT_DONE:
        return "finished", 0, None
    if code == EXIT_FAILED:
        return "failed", failures, None
    failures = 1 if lived_s >= STABLE_S else failures + 1
    return "restarting", failures, restart_delay_s(failures)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exited"
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


@dataclass
class Slot:
    name: str
    record: dict
    proc: subprocess.Popen | None = None
    adopted: psutil.Process | None = None
    started: float = 0.0
    status: str = "starting"
    restarts: int = 0
    failures: int = 0
    next_start: float = 0.0
    last_exit: str = ""

    @property
    def pid(self) -> int:
        if self.proc is not None:
            return self.proc.pid
        return self.adopted.pid if self.adopted is not None else 0

    @property
    def config(self) -> dict:
        return self.record["config"]

    def meta(self, key: str, default=""):
        return (self.config.get("meta") or {}).get(key, default)


class Connectors:
    def __init__(self, sc) -> None:
        self.sc = sc
        self.paths = sc.paths
        self.log: logging.Logger = sc.log
        self.slots: dict[str, Slot] = {}
        for name, record in _store.load_all(self.paths).items():
            ended = record.get("ended") or {}       # finished or failed for good: kept so, across restarts
            self.slots[name] = Slot(name, record, status=ended.get("status", "starting"),
                                    last_exit=ended.get("last_exit", ""))
        self.stopping = False

    def routes(self) -> dict:
        return {m.CreateConnector: self.create, m.ListConnectors: self.list, m.DeleteConnector: self.delete}

    # --- processes ---
    def adopt(self, running: list[psutil.Process]) -> None:
        """Follow the connector processes an earlier SC left running; kill strays."""
        for proc in running:
            name = _name_of(proc)
            slot = self.slots.get(name)
            if slot is None or slot.adopted is not None:
                self.log.warning("connector process %d (%s) is not a kept connector; killing it", proc.pid, name)
                signal_quietly(proc, "kill")
                continue
            slot.adopted, slot.status, slot.started = proc, "running", time.monotonic()
            self.log.info("adopting connector %s (pid %d)", name, proc.pid)

    def _spawn(self, slot: Slot, now: float) -> None:
        self.paths.log_dir.mkdir(parents=True, exist_ok=True)
        with open(os.open(_store.log_file(self.paths, slot.name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
                  "ab") as logf:
            slot.proc = subprocess.Popen(_store.command(self.paths, slot.name, sys.executable), stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=subprocess.STDOUT, close_fds=True)
        slot.adopted, slot.started, slot.status = None, now, "running"
        self.log.info("started connector %s as pid %d", slot.name, slot.proc.pid)

    def _ended(self, slot: Slot) -> int | None | bool:
        """False while its process runs; else its exit code (None when not ours to know)."""
        if slot.proc is not None:
            code = slot.proc.poll()
            return False if code is None else code
        if slot.adopted is not None:
            return False if alive(slot.adopted) else None
        return None

    def tick(self, now: float) -> None:
        """Reap, decide, restart: called from the SC's liveness loop (every 0.1 s)."""
        if self.stopping or self.sc.stopping or self.sc.table is None:
            return
        for slot in self.slots.values():
            if slot.pid:
                code = self._ended(slot)
                if code is False:
                    continue
                lived = now - slot.started
                slot.proc = slot.adopted = None
                slot.status, slot.failures, delay = after_exit(code, lived, slot.failures)
                slot.last_exit = describe_exit(code)
                log = self.log.info if slot.status == "finished" else self.log.warning
                log("connector %s %s after %.1f s: %s", slot.name, slot.last_exit, lived,
                    f"restarting in {delay:.1f} s" if delay is not None else slot.status)
                if delay is None:
                    slot.record["ended"] = {"status": slot.status, "last_exit": slot.last_exit}
                    _store.save(self.paths, slot.name, slot.record)
                    continue
                slot.next_start = now + delay
                slot.restarts += 1
            if slot.status in ("starting", "restarting", "waiting") and now >= slot.next_start:
                if not self._topic_ready(slot):
                    slot.status = "waiting"          # for its topic to be Online (listed so)
                    continue
                self._spawn(slot, now)

    def _topic_ready(self, slot: Slot) -> bool:
        """Start it once its topic has an Online leader for every partition (not before the
        SPUs of a starting cluster are up, which would only make it crash and back off)."""
        topic = _topic_of(slot.config)
        state = self.sc.state.topics.get(topic)
        return state is not None and all(
            reconcile.partition_status(topic, p, self.sc.observed) == PartitionStatus.ONLINE for p in state.partitions)

    async def _stop(self, slots: list[Slot]) -> None:
        for slot in slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.terminate()
            elif slot.adopted is not None:
                signal_quietly(slot.adopted, "terminate")
        deadline = time.monotonic() + STOP_WAIT_S
        while any(self._ended(s) is False for s in slots if s.pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for slot in slots:
            if slot.proc is not None:
                if slot.proc.poll() is None:
                    self.log.warning("connector %s did not stop in %.0f s; killing it", slot.name, STOP_WAIT_S)
                    slot.proc.kill()
                slot.proc.wait()
            elif slot.adopted is not None and alive(slot.adopted):
                signal_quietly(slot.adopted, "kill")
            slot.proc = slot.adopted = None

    async def stop_all(self) -> None:
        self.stopping = True
        running = [s for s in self.slots.values() if s.pid]
        if running:
            self.log.info("stopping connectors %s", ", ".join(s.name for s in running))
        await self._stop(running)

    def kill_all(self) -> None:
        """Last resort on the SC's way out: nothing of ours outlives it un-stopped."""
        for slot in self.slots.values():
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.kill()
                slot.proc.wait()
            elif slot.adopted is not None:
                signal_quietly(slot.adopted, "kill")

    # --- admin ---
    def create(self, msg: m.CreateConnector):
        name = validate_name(msg.name, "connector")
        if name in self.slots:
            raise ConnectorAlreadyExists(f"connector {name!r} already exists (rillet connector delete {name} first)")
        try:
            doc = json.loads(msg.config_json)
        except ValueError as exc:
            raise ConnectorConfigError(f"config: not valid JSON: {exc}") from None
        config = parse_config(doc)
        if config.name != name:
            raise ConnectorConfigError(f"meta.name: {config.name!r} does not match the name given ({name!r})")
        if config.topic not in self.sc.state.topics:
            raise ConnectorConfigError(f"meta.topic: topic {config.topic!r} does not exist "
                                       "(create it first, or set meta.create-topic: true)")
        missing = sorted(config.secret_names() - set(msg.secrets))
        if missing:
            raise ConnectorConfigError(f"secrets.{missing[0]}: no value given")
        record = {"config": doc, "secrets": dict(msg.secrets), "base_dir": msg.base_dir,
                  "created_ms": int(time.time() * 1000)}
        _store.save(self.paths, name, record)
        slot = self.slots[name] = Slot(name, record)
        self.log.info("created connector %s (%s on topic %s)", name, config.type, config.topic)
        self.tick(time.monotonic())
        return m.ConnectorList(msg.cid, [self._info(slot)])

    async def delete(self, msg: m.DeleteConnector):
        slot = self.slots.get(msg.name)
        if slot is None:
            raise ConnectorNotFound(f"connector {msg.name!r} not found")
        del self.slots[msg.name]           # first: the liveness loop must not start it again
        await self._stop([slot])
        _store.remove(self.paths, msg.name)
        self.log.info("deleted connector %s", msg.name)
        return m.Ok(msg.cid)

    def list(self, msg: m.ListConnectors):
        return m.ConnectorList(msg.cid, [self._info(s) for _, s in sorted(self.slots.items())])

    def _info(self, slot: Slot) -> m.ConnectorInfo:
        from rillet.connectors._config import BUILTIN_TYPES
        ctype = str(slot.meta("type"))
        direction = BUILTIN_TYPES.get(ctype, ("",))[0]
        offset, lag = self._offset_and_lag(slot) if direction != "source" else (-1, -1)
        return m.ConnectorInfo(
            name=slot.name, type=ctype, topic=_topic_of(slot.config), direction=direction, status=slot.status,
            pid=slot.pid, restarts=slot.restarts, offset=offset, lag=lag, last_exit=slot.last_exit,
            config_json=json.dumps(slot.config),
        )

    def _offset_and_lag(self, slot: Slot) -> tuple[int, int]:
        """The consumer's stored last-seen offset (summed over partitions, -1 when none is
        stored) and the committed records past it (-1 when a leader is unknown)."""
        consumer = (slot.meta("consumer", {}) or {}).get("id")
        topic_name = _topic_of(slot.config)
        topic = self.sc.state.topics.get(topic_name)
        if not consumer or topic is None:
            return -1, -1
        stored = {r.partition: r.offset for r in self.sc.offsets.rows(consumer, topic_name)}
        lag = 0
        for p in topic.partitions:
            report = reconcile.leader_report(topic_name, p, self.sc.observed)
            if report is None:
                lag = -1
                break
            lag += max(0, report.hw - (stored.get(p.partition, -1) + 1))
        return (sum(stored.values()) if stored else -1), lag


def _topic_of(config: dict) -> str:
    topic = (config.get("meta") or {}).get("topic")
    if isinstance(topic, dict):
        return str((topic.get("meta") or {}).get("name", ""))
    return str(topic or "")


def _name_of(proc: psutil.Process) -> str:
    try:
        cmd = proc.cmdline()
        return cmd[cmd.index("--name") + 1]
    except (psutil.Error, ValueError, IndexError):
        return ""
