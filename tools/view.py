"""The live view behind `rillet top` and `rillet dashboard`: pure, no I/O.

A ``Snapshot`` is what the admin API said at one moment (partitions with leader, epoch,
ISR, HW and LEO; SPUs and their liveness; stored consumer offsets), stamped with the
sampler's monotonic and wall clocks. ``ClusterView.update(snapshot)`` compares it with the
previous ones and returns a ``Frame``: the rows to show, each partition's rate (records/s,
from LEO deltas over the last ``rate_window_s``), consumer lag, and the events since the
last snapshot (a leader change, an in-sync set shrinking or growing, an SPU going offline
or coming back, a partition's status, a topic created or deleted, the SC unreachable). The shells (tools/top.py, tools/dashboard.py)
only take snapshots and draw frames, so every rule here is tested with tables.

Objects in a snapshot only need the attributes of ``rillet.ipc.messages.PartitionInfo``,
``SpuInfo`` and ``ConsumerOffsetInfo`` (``consumer`` or ``consumer_id`` for the name).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from rillet.ipc.lag import consumer_lag     # the one definition (CLI, API, metrics, this view)

RATE_WINDOW_S = 1.0         # rates average over about a second: smooth enough to read, quick to react
HISTORY_S = 60.0            # the dashboard's rate charts and the event timeline look back a minute
MAX_EVENTS = 200            # events kept for the timeline (a drill makes a few per kill)


@dataclass(frozen=True)
class Snapshot:
    t: float                        # monotonic seconds when it was taken (rates use this clock)
    wall_ms: int                    # ms since the epoch (what events and charts show)
    partitions: tuple = ()
    spus: tuple = ()
    offsets: tuple = ()
    error: str | None = None        # the SC could not be asked: the lists are empty, not "all gone"


@dataclass(frozen=True)
class Event:
    wall_ms: int
    kind: str                       # "leader", "isr", "status", "spu", "topic", "sc"
    text: str
    topic: str | None = None
    partition: int | None = None
    spu: int | None = None

    def to_json(self) -> dict:
        return {"wall_ms": self.wall_ms, "kind": self.kind, "text": self.text, "topic": self.topic,
                "partition": self.partition, "spu": self.spu}


@dataclass(frozen=True)
class Frame:
    wall_ms: int
    partitions: list[dict]
    spus: list[dict]
    consumers: list[dict]
    events: list[Event]             # new in this frame
    error: str | None = None

    def to_json(self) -> dict:
        return {"wall_ms": self.wall_ms, "error": self.error, "partitions": self.partitions, "spus": self.spus,
                "consumers": self.consumers, "events": [e.to_json() for e in self.events]}


@dataclass
class _Track:
    """One partition's recent LEO samples (monotonic t, leo) and its rate history (wall_ms, rate)."""
    samples: deque = field(default_factory=deque)
    history: deque = field(default_factory=deque)


def rate_from(samples, window_s: float) -> float | None:
    """Records/s between the newest sample and the newest one at least ``window_s`` older
    (or the oldest there is); None with fewer than two samples or no time between them."""
    if len(samples) < 2:
        return None
    t1, leo1 = samples[-1]
    anchor = samples[0]
    for sample in samples:
        if t1 - sample[0] >= window_s:
            anchor = sample
        else:
            break
    dt = t1 - anchor[0]
    return None if dt <= 0 else max(0.0, (leo1 - anchor[1]) / dt)


def _key(p) -> tuple[str, int]:
    return (p.topic, p.partition)


def _name(p) -> str:
    return f"{p.topic}/{p.partition}"


def _leader_text(leader: int) -> str:
    return str(leader) if leader >= 0 else "none"


def _ids(spus) -> str:
    return "[" + ", ".join(str(s) for s in sorted(spus)) + "]"


def _consumer_name(o) -> str:
    return getattr(o, "consumer", None) or getattr(o, "consumer_id")


class ClusterView:
    """Successive snapshots in, frames out. Keeps what rates, events and charts need."""

    def __init__(self, *, rate_window_s: float = RATE_WINDOW_S, history_s: float = HISTORY_S,
                 max_events: int = MAX_EVENTS) -> None:
        self.rate_window_s = rate_window_s
        self.history_s = history_s
        self.events: deque[Event] = deque(maxlen=max_events)
        self._tracks: dict[tuple[str, int], _Track] = {}
        self._parts: dict[tuple[str, int], object] | None = None     # None: no snapshot seen yet
        self._spus: dict[int, object] = {}
        self._error: str | None = None
        self._last: Frame | None = None

    def update(self, snap: Snapshot) -> Frame:
        if snap.error is not None:
            events = [] if self._error is not None else \
                [Event(snap.wall_ms, "sc", f"SC unreachable: {snap.error}")]
            self._error = snap.error
            self.events.extend(events)
            last = self._last
            # The last rows stay on screen, marked by the error: an SC restart is no empty cluster.
            return Frame(snap.wall_ms, last.partitions if last else [], last.spus if last else [],
                         last.consumers if last else [], events, snap.error)
        events = []
        if self._error is not None:
            events.append(Event(snap.wall_ms, "sc", "SC reachable again"))
            self._error = None
        parts = {_key(p): p for p in snap.partitions}
        spus = {s.id: s for s in snap.spus}
        if self._parts is not None:
            events += self._topic_events(snap.wall_ms, self._parts, parts)
            events += self._partition_events(snap.wall_ms, self._parts, parts)
            events += self._spu_events(snap.wall_ms, self._spus, spus)
        self._parts, self._spus = parts, spus
        self.events.extend(events)
        rates = self._rates(snap, parts)
        consumers = self._consumers(snap.offsets, parts)
        worst: dict[tuple[str, int], int] = {}
        for c in consumers:
            if c["lag"] is not None:
                k = (c["topic"], c["partition"])
                worst[k] = max(worst.get(k, 0), c["lag"])
        rows = [self._row(p, rates.get(_key(p)), worst.get(_key(p))) for p in snap.partitions]
        spu_rows = [dict(id=s.id, status=s.status, online=s.status == "Online", pid=s.pid or None,
                         leaders=s.leaders, replicas=s.replicas) for s in snap.spus]
        self._last = Frame(snap.wall_ms, rows, spu_rows, consumers, events)
        return self._last

    def history(self) -> dict[str, list[list]]:
        """Each partition's rate over the last ``history_s``: ``{"t/0": [[wall_ms, rate], ...]}``."""
        return {f"{k[0]}/{k[1]}": [list(point) for point in track.history] for k, track in self._tracks.items()}

    # --- pieces -----------------------------------------------------------------------------

    def _rates(self, snap: Snapshot, parts: dict) -> dict[tuple[str, int], float | None]:
        for gone in set(self._tracks) - set(parts):
            del self._tracks[gone]
        out = {}
        for k, p in parts.items():
            track = self._tracks.setdefault(k, _Track())
            if p.leo < 0:                       # no leader report: nothing to measure, keep the samples
                out[k] = None
                continue
            if track.samples and p.leo < track.samples[-1][1]:
                track.samples.clear()           # the log went back (truncation, topic recreated): start over
            track.samples.append((snap.t, p.leo))
            while len(track.samples) > 2 and snap.t - track.samples[1][0] >= self.rate_window_s:
                track.samples.popleft()         # keep one sample at least a window old as the anchor
            rate = rate_from(track.samples, self.rate_window_s)
            out[k] = rate
            if rate is not None:
                track.history.append((snap.wall_ms, round(rate, 1)))
            while track.history and snap.wall_ms - track.history[0][0] > self.history_s * 1000:
                track.history.popleft()
        return out

    @staticmethod
    def _row(p, rate: float | None, lag: int | None) -> dict:
        return dict(topic=p.topic, partition=p.partition, leader=p.leader, leader_epoch=p.leader_epoch,
                    replicas=list(p.replicas), in_sync=list(p.in_sync), status=p.status, hw=p.hw, leo=p.leo,
                    rate=None if rate is None else round(rate, 1), lag=lag)

    @staticmethod
    def _consumers(offsets, parts: dict) -> list[dict]:
        rows = []
        for o in offsets:
            p = parts.get((o.topic, o.partition))
            rows.append(dict(consumer=_consumer_name(o), topic=o.topic, partition=o.partition, offset=o.offset,
                             lag=None if p is None else consumer_lag(p.hw, o.offset)))
        return rows

    @staticmethod
    def _topic_events(wall_ms: int, before: dict, after: dict) -> list[Event]:
        old = {t for t, _ in before}
        new = {t for t, _ in after}
        out = []
        for topic in sorted(new - old):
            count = sum(1 for t, _ in after if t == topic)
            out.append(Event(wall_ms, "topic", f"topic {topic} created ({count} partition{'s' * (count != 1)})",
                             topic=topic))
        out += [Event(wall_ms, "topic", f"topic {topic} deleted", topic=topic) for topic in sorted(old - new)]
        return out

    @staticmethod
    def _partition_events(wall_ms: int, before: dict, after: dict) -> list[Event]:
        out = []
        for k, p in after.items():
            q = before.get(k)
            if q is None:
                continue
            if (p.leader, p.leader_epoch) != (q.leader, q.leader_epoch):
                out.append(Event(wall_ms, "leader", f"leader changed {_name(p)}: {_leader_text(q.leader)} -> "
                                 f"{_leader_text(p.leader)} epoch {q.leader_epoch} -> {p.leader_epoch}",
                                 topic=p.topic, partition=p.partition, spu=p.leader))
            if sorted(p.in_sync) != sorted(q.in_sync):
                out.append(Event(wall_ms, "isr", f"{_name(p)}: in-sync {_ids(q.in_sync)} -> {_ids(p.in_sync)}",
                                 topic=p.topic, partition=p.partition))
            if p.status != q.status:
                out.append(Event(wall_ms, "status", f"{_name(p)}: {q.status} -> {p.status}",
                                 topic=p.topic, partition=p.partition))
        return out

    @staticmethod
    def _spu_events(wall_ms: int, before: dict, after: dict) -> list[Event]:
        out = []
        for spu_id, s in sorted(after.items()):
            q = before.get(spu_id)
            online = s.status == "Online"
            if q is None:
                out.append(Event(wall_ms, "spu", f"SPU {spu_id} added ({s.status.lower()})", spu=spu_id))
            elif online != (q.status == "Online"):
                text = f"SPU {spu_id} online (pid {s.pid})" if online else f"SPU {spu_id} offline"
                out.append(Event(wall_ms, "spu", text, spu=spu_id))
            elif online and q.pid and s.pid and s.pid != q.pid:
                # Died and came back between two samples: still worth a line in a drill.
                out.append(Event(wall_ms, "spu", f"SPU {spu_id} restarted (pid {q.pid} -> {s.pid})", spu=spu_id))
        out += [Event(wall_ms, "spu", f"SPU {spu_id} removed", spu=spu_id) for spu_id in sorted(set(before) - set(after))]
        return out
