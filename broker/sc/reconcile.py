"""Pure decisions of the SC: placement, what each SPU must run, partition status.

No I/O here: broker/sc/process.py observes the world, calls these functions, and
carries out what they return (decide, then act).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from rillet.ipc import messages as m
from rillet.ipc.errors import InsufficientResources, InvalidArgument
from rillet.ipc.metadata_table import PartitionRow, PartitionStatus, SpuRow, SpuStatus

from .state import ClusterState, PartitionAssignment, TopicState

FIRST_SPU_ID = 5001            # Fluvio's local clusters number SPUs from 5001
DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024   # preallocated per partition; Fluvio's 1 GiB is too much for a laptop
MIN_SEGMENT_SIZE = 1024
MAX_SEGMENT_SIZE = 2 ** 31     # index positions are u32; keep a margin
MAX_PARTITIONS = 1024          # per topic
MAX_REPLICATION = 8            # metadata table row limit (MAX_REPLICAS)
FLUSH_POLICIES = ("none", "interval", "every-batch")


@dataclass
class SpuObserved:
    """What the SC knows of a running SPU right now (not persisted)."""
    spu_id: int
    pid: int = 0
    online: bool = False
    last_seen: float = 0.0       # monotonic time of its last message (heartbeats every 250 ms)
    replicas: dict[tuple[str, int], m.ReplicaStatus] = field(default_factory=dict)
    replicas_reported: bool = False   # a StatusReport arrived since it registered
    # Replicas it cannot serve whole, with the cause (its last report): see m.ReplicaIssue.
    problems: dict[tuple[str, int], m.ReplicaProblem] = field(default_factory=dict)
    counters: m.SpuCounters | None = None     # its own counters, as of its last report (metrics)


def decides_alike(before: SpuObserved, replicas: dict[tuple[str, int], m.ReplicaStatus],
                   problems: dict[tuple[str, int], m.ReplicaProblem]) -> bool:
    """Would a new report (``replicas``, ``problems``) leave every decision as ``before``'s did?

    Decisions (:func:`reconcile`, :func:`table_rows`, :func:`creation_outcome`) read which
    replicas an SPU holds, their leader flag, epoch and in-sync set, and its problems. Offsets,
    sizes and counters are read only by an election's tie-break (an election follows an SPU's
    loss or a problem, each reconciled on its own), by metrics and by admin answers, which all
    read the stored report. So a heartbeat that repeats the last report, or one whose offsets
    alone moved, needs no reconcile. The first report after registering is never alike."""
    if not before.replicas_reported or problems != before.problems or replicas.keys() != before.replicas.keys():
        return False
    old = before.replicas
    for key, r in replicas.items():
        o = old[key]
        if r.is_leader != o.is_leader or r.leader_epoch != o.leader_epoch or r.in_sync != o.in_sync:
            return False
    return True


def validate_config(config: m.TopicConfig, spu_count: int) -> m.TopicConfig:
    """Check a topic config and fill defaults; raise InvalidArgument/InsufficientResources."""
    if not 1 <= config.partitions <= MAX_PARTITIONS:
        raise InvalidArgument(f"partitions must be between 1 and {MAX_PARTITIONS}, got {config.partitions}")
    if not 1 <= config.replication <= MAX_REPLICATION:
        raise InvalidArgument(f"replication factor must be between 1 and {MAX_REPLICATION}, got {config.replication}")
    if config.replication > spu_count:
        raise InsufficientResources(
            f"replication factor {config.replication} needs {config.replication} SPUs, the cluster has {spu_count}"
        )
    segment_size = config.segment_size if config.segment_size is not None else DEFAULT_SEGMENT_SIZE
    if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
        raise InvalidArgument(f"segment size must be between {MIN_SEGMENT_SIZE} and {MAX_SEGMENT_SIZE} bytes, got {segment_size}")
    if config.max_partition_size is not None and config.max_partition_size < segment_size:
        raise InvalidArgument(
            f"max partition size {config.max_partition_size} is smaller than the segment size {segment_size}"
        )
    if config.retention_time_s is not None and config.retention_time_s < 10:
        raise InvalidArgument(f"retention time must be at least 10 seconds, got {config.retention_time_s}")
    from rillet.ipc.compression import parse_topic_compression
    compression = parse_topic_compression(config.compression_type)
    min_isr = config.min_in_sync_replicas
    if min_isr is None:
        min_isr = 1 if config.replication == 1 else 2
    if not 1 <= min_isr <= config.replication:
        raise InvalidArgument(f"min in-sync replicas must be between 1 and {config.replication}, got {min_isr}")
    if config.flush not in FLUSH_POLICIES:
        raise InvalidArgument(f"unknown flush policy {config.flush!r} (expected one of {', '.join(FLUSH_POLICIES)})")
    if config.flush_interval_ms < 1:
        raise InvalidArgument(f"flush interval must be at least 1 ms, got {config.flush_interval_ms}")
    return m.TopicConfig(
        partitions=config.partitions, replication=config.replication, retention_time_s=config.retention_time_s,
        segment_size=segment_size, max_partition_size=config.max_partition_size,
        compression_type=compression, min_in_sync_replicas=min_isr, flush=config.flush,
        flush_interval_ms=config.flush_interval_ms,
    )


def place_partitions(state: ClusterState, partitions: int, replication: int) -> list[list[int]]:
    """Choose replicas per partition: leaders spread over the SPUs with the fewest
    leaders so far, followers on distinct SPUs with the fewest replicas."""
    spus = sorted(state.spus)
    leaders = {s: 0 for s in spus}
    replicas = {s: 0 for s in spus}
    for topic in state.topics.values():
        for p in topic.partitions:
            if p.replicas and p.replicas[0] in leaders:
                leaders[p.replicas[0]] += 1
            for s in p.replicas:
                if s in replicas:
                    replicas[s] += 1
    placement = []
    for _ in range(partitions):
        leader = min(spus, key=lambda s: (leaders[s], replicas[s], s))
        chosen = [leader]
        followers = sorted((s for s in spus if s != leader), key=lambda s: (replicas[s], s))
        chosen += followers[: replication - 1]
        leaders[leader] += 1
        for s in chosen:
            replicas[s] += 1
        placement.append(chosen)
    return placement


def check_table_room(state: ClusterState, more: int, table_rows: int) -> None:
    """Refuse ``more`` partitions when the metadata table (``table_rows`` partition rows) could
    not publish them all: clients would never see the ones past its end."""
    in_cluster = sum(len(t.partitions) for t in state.topics.values()) + more
    if in_cluster > table_rows:
        raise InsufficientResources(f"the cluster would have {in_cluster} partitions; its metadata table holds {table_rows}")


def new_topic(state: ClusterState, name: str, config: m.TopicConfig, now_ms: int) -> TopicState:
    placement = place_partitions(state, config.partitions, config.replication)
    parts = [PartitionAssignment(partition=i, replicas=r, leader=r[0], leader_epoch=1, in_sync=list(r))
             for i, r in enumerate(placement)]
    return TopicState(name=name, config=config, partitions=parts, created_ms=now_ms)


UPDATABLE = ("retention_time_s", "max_partition_size", "segment_size", "compression_type", "flush",
             "flush_interval_ms", "min_in_sync_replicas")


def updated_config(config: m.TopicConfig, changes: m.TopicChanges, spu_count: int) -> m.TopicConfig:
    """``config`` with ``changes`` applied, checked as a new topic's config is. Each of these is
    safe on a live topic: SPUs apply them to the next batch, segment or retention pass."""
    given = {f: getattr(changes, f) for f in UPDATABLE if getattr(changes, f) is not None}
    if not given:
        raise InvalidArgument("nothing to update: give at least one of " + ", ".join(UPDATABLE))
    if "flush_interval_ms" in given and "flush" not in given and config.flush != "interval":
        given["flush"] = "interval"             # as `topic create --flush-interval` alone means
    return validate_config(msgspec.structs.replace(config, **given), spu_count)


def added_partitions(state: ClusterState, name: str, count: int, table_rows: int) -> list[PartitionAssignment]:
    """``count`` new partitions for topic ``name``, numbered after its last, placed as a new
    topic's are. Existing partitions keep their replicas, leaders and records; keys then hash
    over the new count (Fluvio's rule). ``table_rows``: the metadata table's partition rows."""
    topic = state.topics[name]
    if not isinstance(count, int) or count < 1:
        raise InvalidArgument(f"partitions to add must be at least 1, got {count!r}")
    total = len(topic.partitions) + count
    if total > MAX_PARTITIONS:
        raise InvalidArgument(f"topic {name!r} has {len(topic.partitions)} partitions; {count} more would make "
                              f"{total}, over the limit of {MAX_PARTITIONS}")
    check_table_room(state, count, table_rows)
    first = len(topic.partitions)
    return [PartitionAssignment(partition=first + i, replicas=r, leader=r[0], leader_epoch=1, in_sync=list(r))
            for i, r in enumerate(place_partitions(state, count, topic.config.replication))]


# --- SPUs added and removed (broker/sc/membership.py carries these out) ---

def next_spu_id(state: ClusterState) -> int:
    return max(state.spus, default=FIRST_SPU_ID - 1) + 1


def replica_moves(state: ClusterState, topics_replication: dict[str, int], spu: int) -> list[tuple[str, int, int]]:
    """Where each replica SPU ``spu`` holds goes before the SPU is removed: ``(topic, partition,
    target)``, targets spread over the other SPUs with the fewest replicas. A partition that
    already has an extra replica (a removal that timed out) keeps it as its target.
    ``topics_replication``: each topic's replication factor."""
    rest = sorted(s for s in state.spus if s != spu)
    if not rest:
        raise InvalidArgument(f"SPU {spu} is the last SPU of the cluster; a cluster keeps at least one")
    load = {s: sum(1 for t in state.topics.values() for p in t.partitions if s in p.replicas) for s in rest}
    moves = []
    for name in sorted(state.topics):
        for p in state.topics[name].partitions:
            if spu not in p.replicas:
                continue
            if len(p.replicas) > topics_replication[name]:
                target = p.replicas[-1]                 # the copy a previous attempt added
            else:
                free = [s for s in rest if s not in p.replicas]
                if not free:
                    raise InsufficientResources(
                        f"removing SPU {spu} leaves {len(rest)} SPU(s); topic {name!r} has replication factor "
                        f"{len(p.replicas)}: add an SPU first (rillet cluster spu add)")
                target = min(free, key=lambda s: (load[s], s))
                load[target] += 1
            moves.append((name, p.partition, target))
    return moves


def stranded(state: ClusterState, spu: int) -> list[str]:
    """Partitions an offline ``spu`` still leads (no other in-sync replica took over): only
    its own copy is known complete, so it cannot be removed until it comes back."""
    return [f"{name}/{p.partition}" for name in sorted(state.topics) for p in state.topics[name].partitions
            if spu in p.replicas and p.leader in (spu, -1) and not set(p.in_sync) - {spu}]


def with_replica_added(p: PartitionAssignment, target: int) -> PartitionAssignment:
    """Step 1 of a move: ``target`` follows the leader as one more replica (not in sync yet)."""
    if target in p.replicas:
        return p
    return PartitionAssignment(partition=p.partition, replicas=[*p.replicas, target], leader=p.leader,
                               leader_epoch=p.leader_epoch, in_sync=list(p.in_sync))


def fenced(p: PartitionAssignment) -> PartitionAssignment:
    """Before a led partition is handed over: the same leader at the next epoch, published in
    the table but not sent to the SPUs. The leader sees the newer epoch and refuses produces
    (its fence) while its followers still copy from it, so the new leader gets every record."""
    return PartitionAssignment(partition=p.partition, replicas=list(p.replicas), leader=p.leader,
                               leader_epoch=p.leader_epoch + 1, in_sync=list(p.in_sync))


def handed_over(p: PartitionAssignment, spu: int, target: int) -> PartitionAssignment:
    """Step 2, once ``target`` is in sync: ``target`` takes ``spu``'s place in the replica list;
    if ``spu`` led, the first in-sync replica of the new list leads at the next epoch (a
    controlled failover: every committed record is on it)."""
    replicas = [target if s == spu else s for s in p.replicas if s != target]
    in_sync = [s for s in p.in_sync if s != spu]
    leader, epoch = p.leader, p.leader_epoch
    if leader == spu:
        leader = next(s for s in replicas if s in in_sync)
        epoch += 1
    return PartitionAssignment(partition=p.partition, replicas=replicas, leader=leader, leader_epoch=epoch,
                               in_sync=in_sync)


def replica_specs_for(state: ClusterState, spu_id: int) -> list[m.ReplicaSpec]:
    """Everything SPU ``spu_id`` must run, as UpdateReplicas carries it."""
    specs = []
    for topic in state.topics.values():
        cfg = topic.config
        for p in topic.partitions:
            if spu_id in p.replicas:
                specs.append(m.ReplicaSpec(
                    topic=topic.name, partition=p.partition, replicas=list(p.replicas), leader=p.leader,
                    leader_epoch=p.leader_epoch, segment_size=cfg.segment_size or DEFAULT_SEGMENT_SIZE,
                    compression_type=cfg.compression_type, min_in_sync_replicas=cfg.min_in_sync_replicas or 1,
                    in_sync=list(p.in_sync), retention_time_s=cfg.retention_time_s,
                    max_partition_size=cfg.max_partition_size, flush=cfg.flush,
                    flush_interval_ms=cfg.flush_interval_ms,
                ))
    return specs


def partition_status(topic: str, p: PartitionAssignment, observed: dict[int, SpuObserved]) -> PartitionStatus:
    if p.leader < 0:
        return PartitionStatus.LEADER_OFFLINE
    spu = observed.get(p.leader)
    if spu is None or not spu.online:
        return PartitionStatus.LEADER_OFFLINE
    report = spu.replicas.get((topic, p.partition))
    if report is not None and report.is_leader and report.leader_epoch == p.leader_epoch:
        return PartitionStatus.ONLINE
    return PartitionStatus.OFFLINE


def partition_problems(topic: str, p: PartitionAssignment,
                       observed: dict[int, SpuObserved]) -> list[m.ReplicaIssue]:
    """What the online SPUs holding a replica of ``p`` report wrong with it, by SPU id."""
    out = []
    for spu in p.replicas:
        o = observed.get(spu)
        problem = o.problems.get((topic, p.partition)) if o is not None and o.online else None
        if problem is not None:
            out.append(m.ReplicaIssue(spu, problem.kind, problem.cause))
    return out


def creation_outcome(topic: TopicState, observed: dict[int, SpuObserved]) -> tuple[bool, str | None]:
    """Has a new topic settled, and why did it fail (None: it did not)?

    Settled: every online replica SPU reported each of its replicas (created or not), and
    every partition is Online or has a replica that could not be created. A failure names
    the first SPU, replica and cause (e.g. ENOSPC at preallocation)."""
    settled = True
    for p in topic.partitions:
        for issue in partition_problems(topic.name, p, observed):
            if issue.kind == "cannot-create":
                return True, f"SPU {issue.spu} cannot create replica {topic.name}/{p.partition}: {issue.cause}"
        if partition_status(topic.name, p, observed) != PartitionStatus.ONLINE:
            settled = False
        for spu in p.replicas:
            o = observed.get(spu)
            if o is not None and o.online and (topic.name, p.partition) not in o.replicas:
                settled = False
    return settled, None


def leader_report(topic: str, p: PartitionAssignment, observed: dict[int, SpuObserved]) -> m.ReplicaStatus | None:
    spu = observed.get(p.leader)
    return spu.replicas.get((topic, p.partition)) if spu is not None else None


def table_rows(state: ClusterState, observed: dict[int, SpuObserved]) -> tuple[list[SpuRow], list[PartitionRow]]:
    spus = []
    for spu_id in sorted(state.spus):
        o = observed.get(spu_id)
        status = SpuStatus.ONLINE if o is not None and o.online else (SpuStatus.OFFLINE if o is not None else SpuStatus.INIT)
        spus.append(SpuRow(spu_id=spu_id, pid=o.pid if o else 0, status=status))
    # Offsets (hw, leo) are not published: they change with every produce, and each change
    # of the table makes every client re-read it. `partition list` asks the SC for them.
    rows = []
    for name in sorted(state.topics):
        topic = state.topics[name]
        for p in topic.partitions:
            rows.append(PartitionRow(
                topic=name, partition=p.partition, leader=p.leader, leader_epoch=p.leader_epoch,
                status=partition_status(name, p, observed), replicas=tuple(p.replicas), in_sync=tuple(p.in_sync),
            ))
    return spus, rows


@dataclass(frozen=True)
class Election:
    topic: str
    partition: int
    leader: int          # the new leader
    in_sync: tuple[int, ...]


def reported_leo(observed: dict[int, SpuObserved], spu: int, topic: str, partition: int) -> int:
    o = observed.get(spu)
    report = o.replicas.get((topic, partition)) if o is not None else None
    return report.leo if report is not None else -1


def elections(state: ClusterState, observed: dict[int, SpuObserved]) -> list[Election]:
    """Partitions whose leader is not online, and who leads them next (as :func:`reconcile`
    decides them).

    Only a replica of the last reported in-sync set (ISR) may be elected — it holds
    every committed record — the one with the most data (highest reported LEO), ties
    going to the earlier replica in the assignment. With no online ISR member the
    partition stays without a leader (LeaderOffline) rather than serving a stale copy.
    """
    actions = reconcile(state, Observation(observed, now=0.0, spu_timeout_s=float("inf")))
    return [Election(u.topic, u.partition, u.leader, u.in_sync) for u in actions.updates if "elected" in u.reason]


# --- reconcile: every decision the SC takes about leaders, epochs and in-sync sets ---

@dataclass(frozen=True)
class Observation:
    """What the SC sees now: the input of :func:`reconcile` besides its persisted state."""
    spus: dict[int, SpuObserved]
    now: float                            # monotonic seconds
    spu_timeout_s: float                  # an online SPU silent this long is treated as dead
    stopping: bool = False                # the cluster is being stopped: SPUs leave on purpose
    # SPUs whose processes were running when this SC started (adopted after an SC restart)
    # and have not reported yet: elections wait for them, or for the adoption to time out,
    # so that a leader is never chosen before every live replica's data is known.
    awaiting: frozenset[int] = frozenset()
    running: frozenset[int] = frozenset()  # SPUs with a live process, spawned or adopted
    spawn_missing: bool = False           # start SPUs without a process (cluster start, not an SC restart)


@dataclass(frozen=True)
class PartitionUpdate:
    topic: str
    partition: int
    leader: int
    leader_epoch: int
    in_sync: tuple[int, ...]
    reason: str                           # "elected", "in-sync", "epoch-floor": for the log


@dataclass(frozen=True)
class Actions:
    silent: tuple[int, ...] = ()          # SPUs to declare dead (no heartbeat past the timeout)
    updates: tuple[PartitionUpdate, ...] = ()   # persist (metadata.json) before anything else
    push: tuple[int, ...] = ()            # SPUs whose assignment changed: send them UpdateReplicas
    spawn: tuple[int, ...] = ()           # SPUs to start

    def __bool__(self) -> bool:
        return bool(self.silent or self.updates or self.push or self.spawn)


def reconcile(state: ClusterState, obs: Observation) -> Actions:
    """Decide, from the persisted state and what is observed, everything that must change.

    In this order, each step seeing the previous one's result:

    1. SPUs silent past the timeout are dead (a paused or hung SPU).
    2. Epoch floor: an epoch a live replica reports above the persisted one becomes the
       persisted one (epochs never move backwards, even if metadata.json lost a write).
    3. In-sync sets: the current leader's report at the current epoch is the truth;
       elections choose from it. A leader changes its ISR on its own (also while the SC
       is away) and reports it; the SC records it here.
    4. Elections (none while stopping or while adopted SPUs are awaited): see
       :func:`elections`; each bumps the epoch by one.
    5. SPUs hosting a partition whose leader or epoch changed get their assignment.
    6. With ``spawn_missing``, SPUs with no process are started, after the elections,
       so a leader that died while the SC was away is replaced, not restarted as leader.
    """
    if obs.stopping:
        return Actions()
    silent = tuple(sorted(s for s, o in obs.spus.items() if o.online and obs.now - o.last_seen > obs.spu_timeout_s))
    online = {s for s, o in obs.spus.items() if o.online and s not in silent}
    updates: list[PartitionUpdate] = []
    push: set[int] = set()
    for name, topic in state.topics.items():
        for p in topic.partitions:
            update = _partition_decision(name, p, obs, online, elect=not obs.awaiting)
            if update is not None:
                updates.append(update)
                if (update.leader, update.leader_epoch) != (p.leader, p.leader_epoch):
                    push.update(s for s in p.replicas if s in online)
    spawn: tuple[int, ...] = ()
    if obs.spawn_missing and not obs.awaiting:
        spawn = tuple(s for s in sorted(state.spus) if s not in obs.running and s not in online)
    return Actions(silent, tuple(updates), tuple(sorted(push)), spawn)


def _partition_decision(name: str, p: PartitionAssignment, obs: Observation, online: set[int],
                        elect: bool) -> PartitionUpdate | None:
    epoch, leader, in_sync, reasons = p.leader_epoch, p.leader, list(p.in_sync), []
    reports = {s: o.replicas[(name, p.partition)] for s, o in obs.spus.items()
               if s in online and (name, p.partition) in o.replicas}
    top = max((r.leader_epoch for r in reports.values()), default=epoch)
    if top > epoch:
        # metadata.json is behind what the SPUs run (it lost a write): their epoch is a floor.
        # A replica leading at that epoch keeps leading. With none, the persisted leader
        # cannot be trusted for that epoch, so the partition is elected afresh above it,
        # but only once every adopted SPU has reported (one of them may be that leader).
        claimants = [s for s, r in reports.items() if r.is_leader and r.leader_epoch == top]
        if claimants or elect:
            epoch, leader = top, (claimants[0] if claimants else -1)
            reasons.append("epoch-floor")
    report = reports.get(leader)
    if report is not None and report.is_leader and report.leader_epoch == epoch and sorted(report.in_sync) != sorted(in_sync):
        in_sync = sorted(report.in_sync)
        reasons.append("in-sync")
    # Copies their SPU reports damaged (directory gone, a bad batch): never preferred while a
    # whole in-sync copy is online, and a damaged leader hands over to one (issue 10).
    key = (name, p.partition)
    problems = {s: obs.spus[s].problems[key] for s in online if key in obs.spus[s].problems}
    damaged = set(problems)
    leader_gone = leader not in online
    if elect and (leader_gone or leader in damaged):
        # Only a copy its SPU has reported holding: one that registered a moment ago may not have
        # opened it yet, and one it could not open holds nothing to serve (its report says why).
        # A copy being fetched again from its leader is behind by definition: never elected.
        candidates = [s for s in in_sync if s in online and s in p.replicas and key in obs.spus[s].replicas
                      and not (s in problems and problems[s].kind in ("rebuilding", "cannot-create"))]
        whole = [s for s in candidates if s not in damaged]
        if not leader_gone:
            candidates = [s for s in whole if s != leader]      # hand over only to a whole copy
        elif whole:
            candidates = whole
        if candidates:
            leader = max(candidates, key=lambda s: (reported_leo(obs.spus, s, name, p.partition), -p.replicas.index(s)))
            in_sync = [s for s in in_sync if s in online and (s not in damaged or s == leader)]
            epoch += 1
            reasons.append("elected" if leader_gone else "elected (leader copy damaged)")
    if not reasons:
        return None
    return PartitionUpdate(name, p.partition, leader, epoch, tuple(in_sync), "+".join(reasons))


def apply_updates(state: ClusterState, updates: tuple[PartitionUpdate, ...]) -> None:
    """Write decided updates into ``state`` (the caller persists it)."""
    for u in updates:
        p = state.topics[u.topic].partitions[u.partition]
        p.leader, p.leader_epoch, p.in_sync = u.leader, u.leader_epoch, list(u.in_sync)
