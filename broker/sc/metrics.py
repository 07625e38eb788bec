"""Prometheus metrics of a cluster, gathered by the SC at scrape time.

Nothing is counted here: the SPUs count in plain ints on their hot paths and send the
totals with the status reports they already send (m.ReplicaStatus, m.SpuCounters); the
SC keeps its own (broker/sc/stats.py); offsets come from the leaders' positions tables
(broker/sc/live.py) and consumer offsets from the SC's store. A scrape has two halves:
``Snapshots.take`` copies the numbers into plain tuples in the SC's event loop thread, so
it reads a consistent state without locks; ``render`` turns that copy into the text
format in a worker thread (broker/sc/metrics_http.py), since building and formatting
~5,000 samples (300 partitions at RF 2) took 66-178 ms of the loop, which liveness and
elections wait behind.

``prometheus_client`` is optional (``pip install 'rillet[metrics]'``) and imported only
when a cluster serves metrics: ``require_prometheus`` says so in one line otherwise.

METRICS is the catalogue: every family this module yields, with its type, labels and
help; README's metrics table lists the same (a test checks both ways).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Iterator, NamedTuple

from rillet.ipc.lag import consumer_lag
from rillet.ipc.metadata_table import PartitionStatus

from . import reconcile

if TYPE_CHECKING:
    from .process import Controller

INSTALL_HINT = "metrics need the prometheus_client package: pip install 'rillet[metrics]'"


class Metric(NamedTuple):
    name: str             # as exposed (counters with their _total suffix)
    kind: str             # gauge | counter | histogram
    labels: tuple[str, ...]
    help: str


_P, _R, _S, _C = ("topic", "partition"), ("topic", "partition", "spu"), ("spu",), ("consumer", "topic", "partition")
METRICS = (
    Metric("rillet_partition_log_end_offset", "gauge", _P, "Offset the next record will get (LEO), on the leader"),
    Metric("rillet_partition_high_watermark", "gauge", _P, "High watermark: records below it are committed"),
    Metric("rillet_partition_log_start_offset", "gauge", _P, "First offset still kept (retention moves it up)"),
    Metric("rillet_partition_size_bytes", "gauge", _P, "Bytes of the leader's log"),
    Metric("rillet_partition_in_sync_replicas", "gauge", _P, "Replicas in the in-sync set"),
    Metric("rillet_partition_replicas", "gauge", _P, "Replicas assigned (replication factor)"),
    Metric("rillet_partition_leader_epoch", "gauge", _P, "Leader epoch (each election adds one)"),
    Metric("rillet_partition_leader", "gauge", _P, "SPU id of the leader (-1: none)"),
    Metric("rillet_partition_online", "gauge", _P, "1 when the partition has an online leader"),
    Metric("rillet_partition_records_in_total", "counter", _R,
           "Records produced and stored by this replica as leader (retried duplicates not counted)"),
    Metric("rillet_partition_bytes_in_total", "counter", _R, "Bytes of record batches produced to this replica as leader"),
    Metric("rillet_partition_records_out_total", "counter", _R,
           "Records sent to consumers over this SPU's socket (direct reads and followers not counted)"),
    Metric("rillet_partition_bytes_out_total", "counter", _R, "Bytes of record batches sent to consumers over this SPU's socket"),
    Metric("rillet_partition_fsyncs_total", "counter", _R, "fsyncs of this replica's log (flush policy)"),
    Metric("rillet_spu_up", "gauge", _S, "1 when the SPU is registered and heard from"),
    Metric("rillet_spu_connections", "gauge", _S, "Open connections to the SPU's socket"),
    Metric("rillet_spu_requests_total", "counter", _S + ("kind",), "Requests handled, by kind"),
    Metric("rillet_spu_errors_total", "counter", _S + ("error",), "Error answers, by error"),
    Metric("rillet_spu_resident_memory_bytes", "gauge", _S, "Resident set size of the SPU process"),
    Metric("rillet_spu_cpu_seconds_total", "counter", _S, "CPU time (user + system) of the SPU process"),
    Metric("rillet_spu_leaderships_gained_total", "counter", _S,
           "Times a replica on this SPU became leader (its start and elections included)"),
    Metric("rillet_spu_leader_partitions", "gauge", _S, "Partitions the SPU leads now"),
    Metric("rillet_consumer_offset", "gauge", _C, "Last offset the named consumer has seen (stored)"),
    Metric("rillet_consumer_lag", "gauge", _C, "Records below the high watermark the named consumer has not seen"),
    Metric("rillet_sc_elections_total", "counter", (), "Leaders elected because the leader died or its copy was damaged"),
    Metric("rillet_sc_spu_deaths_total", "counter", (), "SPUs lost: control link closed, or silent for 1.5 s"),
    Metric("rillet_sc_time_to_new_leader_seconds", "histogram", (),
           "From losing a leader's SPU to electing the next leader, per partition"),
    Metric("rillet_sc_status_reports_total", "counter", (), "Status reports received from SPUs (heartbeats included)"),
    Metric("rillet_sc_reconciles_total", "counter", ("trigger",),
           "Reconcile passes, by trigger: periodic, status-report (one that changed something), event"),
    Metric("rillet_sc_resident_memory_bytes", "gauge", (), "Resident set size of the SC process"),
    Metric("rillet_sc_cpu_seconds_total", "counter", (), "CPU time (user + system) of the SC process"),
)


_HELP = {metric.name: metric.help for metric in METRICS}


def require_prometheus():
    """Import prometheus_client or raise ImportError with the one-line install hint."""
    try:
        import prometheus_client
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return prometheus_client


def renderer(sc: "Controller"):
    """A function to call on the SC's loop: it takes a snapshot of ``sc``'s numbers and returns
    the function to call off the loop, giving (content type, exposition bytes). ImportError
    with the install hint when prometheus_client is missing."""
    prometheus_client = require_prometheus()
    snapshots = Snapshots(sc)

    def take():
        snapshot = snapshots.take()
        return lambda: (prometheus_client.CONTENT_TYPE_LATEST, render(snapshot))
    return take


class Snapshot(NamedTuple):
    samples: dict[str, list[tuple[tuple, float]]]    # metric name -> [(label values, value)]
    time_to_new_leader: tuple[list[tuple[str, int]], float]   # cumulative buckets, sum


def render(snapshot: Snapshot) -> bytes:
    """The exposition text of ``snapshot``; touches nothing of the SC, so any thread may run it."""
    import prometheus_client
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    families = []
    for metric in METRICS:
        if metric.kind == "counter":
            family = CounterMetricFamily(metric.name[:-len("_total")], metric.help, labels=metric.labels)
        elif metric.kind == "gauge":
            family = GaugeMetricFamily(metric.name, metric.help, labels=metric.labels)
        else:
            continue
        for labels, value in snapshot.samples[metric.name]:
            family.add_metric([str(v) for v in labels], value)
        families.append(family)
        _let_the_loop_run()
    buckets, total = snapshot.time_to_new_leader
    histogram = HistogramMetricFamily("rillet_sc_time_to_new_leader_seconds", _HELP["rillet_sc_time_to_new_leader_seconds"])
    histogram.add_metric([], buckets, total)
    families.append(histogram)
    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return prometheus_client.generate_latest(registry)


class _Families:
    """A collector yielding families already built (the registry asks a collector for them)."""

    def __init__(self, families: list) -> None:
        self.families = families

    def describe(self):
        return []

    def collect(self) -> Iterator:
        for family in self.families:
            yield family
            _let_the_loop_run()          # the registry formats a family between two of these


def _let_the_loop_run() -> None:
    """Release the GIL now: a thread waiting for it (the SC's loop) takes it at once instead
    of after sys.getswitchinterval() (5 ms), so a render delays the loop by about one
    family's work (~1 ms for 600 samples) at a time."""
    time.sleep(0)


class Snapshots:
    """Copies a live Controller's numbers into a Snapshot (run it on the SC's loop)."""

    def __init__(self, sc: "Controller") -> None:
        self.sc = sc
        self._procs: dict[int, object] = {}     # pid -> psutil.Process, kept between scrapes of the same pid

    def take(self) -> Snapshot:
        samples: dict[str, list] = {metric.name: [] for metric in METRICS if metric.kind != "histogram"}
        add = lambda name, labels, value: samples[name].append((labels, value))  # noqa: E731
        live = self.sc.live_positions()
        used: set[int] = set()
        self._partitions(add, live)
        self._spus(add, used)
        self._consumers(add, live)
        self._sc(add, used)
        self._procs = {pid: proc for pid, proc in self._procs.items() if pid in used}
        stats = self.sc.stats.time_to_new_leader
        return Snapshot(samples, (stats.cumulative(), stats.total))

    def _partitions(self, add, live: dict) -> None:
        sc = self.sc
        for name, topic in sc.state.topics.items():
            for p in topic.partitions:
                key = (name, p.partition)
                report = reconcile.leader_report(name, p, sc.observed)
                status = reconcile.partition_status(name, p, sc.observed)
                row = live.get(key)
                if row is not None and row.leader_epoch != p.leader_epoch:
                    row = None
                labels = key
                if row is not None or report is not None:
                    add("rillet_partition_log_end_offset", labels, row.leo if row else report.leo)
                    add("rillet_partition_high_watermark", labels, row.hw if row else report.hw)
                    add("rillet_partition_log_start_offset", labels, row.log_start if row else report.log_start)
                if report is not None:
                    add("rillet_partition_size_bytes", labels, report.size_bytes)
                    add("rillet_partition_in_sync_replicas", labels, len(report.in_sync))
                add("rillet_partition_replicas", labels, len(p.replicas))
                add("rillet_partition_leader_epoch", labels, p.leader_epoch)
                add("rillet_partition_leader", labels, p.leader)
                add("rillet_partition_online", labels, 1 if status == PartitionStatus.ONLINE else 0)
        for spu_id, obs in sc.observed.items():
            if not obs.online:
                continue
            for (topic, partition), r in obs.replicas.items():
                labels = (topic, partition, spu_id)
                add("rillet_partition_records_in_total", labels, r.records_in)
                add("rillet_partition_bytes_in_total", labels, r.bytes_in)
                add("rillet_partition_records_out_total", labels, r.records_out)
                add("rillet_partition_bytes_out_total", labels, r.bytes_out)
                add("rillet_partition_fsyncs_total", labels, r.flushes)

    def _spus(self, add, used: set[int]) -> None:
        sc = self.sc
        leaders: dict[int, int] = {}
        for topic in sc.state.topics.values():
            for p in topic.partitions:
                leaders[p.leader] = leaders.get(p.leader, 0) + 1
        for spu_id in sorted(sc.state.spus):
            obs = sc.observed.get(spu_id)
            up = obs is not None and obs.online
            add("rillet_spu_up", (spu_id,), 1 if up else 0)
            if not up:
                continue
            add("rillet_spu_leader_partitions", (spu_id,), leaders.get(spu_id, 0))
            c = obs.counters
            if c is not None:
                add("rillet_spu_connections", (spu_id,), c.connections)
                for kind, n in sorted(c.requests.items()):
                    add("rillet_spu_requests_total", (spu_id, kind), n)
                for error, n in sorted(c.errors.items()):
                    add("rillet_spu_errors_total", (spu_id, error), n)
                add("rillet_spu_leaderships_gained_total", (spu_id,), c.leaderships_gained)
            usage = self._usage(obs.pid, used)
            if usage is not None:
                add("rillet_spu_resident_memory_bytes", (spu_id,), usage[0])
                add("rillet_spu_cpu_seconds_total", (spu_id,), usage[1])

    def _consumers(self, add, live: dict) -> None:
        sc = self.sc
        for row in sc.offsets.rows():
            labels = (row.consumer, row.topic, row.partition)
            add("rillet_consumer_offset", labels, row.offset)
            lag = consumer_lag(sc.partition_hw(row.topic, row.partition, live), row.offset)
            if lag is not None:
                add("rillet_consumer_lag", labels, lag)

    def _sc(self, add, used: set[int]) -> None:
        import os
        stats = self.sc.stats
        add("rillet_sc_elections_total", (), stats.elections)
        add("rillet_sc_spu_deaths_total", (), stats.spu_deaths)
        add("rillet_sc_status_reports_total", (), stats.status_reports)
        for trigger, n in stats.reconciles.items():
            add("rillet_sc_reconciles_total", (trigger,), n)
        usage = self._usage(os.getpid(), used)
        if usage is not None:
            add("rillet_sc_resident_memory_bytes", (), usage[0])
            add("rillet_sc_cpu_seconds_total", (), usage[1])

    def _usage(self, pid: int, used: set[int]) -> tuple[int, float] | None:
        """(RSS bytes, CPU seconds) of ``pid``, None when it is gone."""
        import psutil
        used.add(pid)
        proc = self._procs.get(pid)
        try:
            if proc is None:
                proc = self._procs[pid] = psutil.Process(pid)
            with proc.oneshot():
                times = proc.cpu_times()
                return proc.memory_info().rss, times.user + times.system
        except psutil.Error:
            self._procs.pop(pid, None)
            return None
