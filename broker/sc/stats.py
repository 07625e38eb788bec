"""The SC's own counters for the metrics endpoint: elections, SPU deaths, time to a new leader,
status reports and reconcile passes.

Pure bookkeeping, plain ints and a fixed-bucket histogram, fed by the SC's process
shell (broker/sc/process.py) as it acts on reconcile's decisions; broker/sc/metrics.py
turns them into Prometheus families at scrape time. Counted since this SC started (a
restarted SC starts again from 0, which Prometheus reads as a counter reset).

Time to a new leader is measured per partition from the moment the SC lost its leader's
SPU (its control link closed; for a silent SPU, the last time it was heard from, so the
1.5 s of silence before it is declared dead counts) to the election of the next leader.
A leader that died while no SC ran has no such moment and is not measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RECONCILE_TRIGGERS = ("periodic", "status-report", "event")
# Failover takes milliseconds after a death is seen, and ~1.5 s for a silent SPU.
TIME_TO_LEADER_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Histogram:
    """Cumulative-at-export buckets: ``counts[i]`` holds observations <= bounds[i] and > bounds[i-1];
    the last slot holds those above every bound (+Inf)."""
    bounds: tuple[float, ...] = TIME_TO_LEADER_BUCKETS_S
    counts: list[int] = field(default_factory=lambda: [0] * (len(TIME_TO_LEADER_BUCKETS_S) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus buckets: (upper bound as text, observations <= it), ending with +Inf."""
        out, running = [], 0
        for bound, n in zip(self.bounds, self.counts):
            running += n
            out.append((repr(float(bound)), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


@dataclass
class ScStats:
    elections: int = 0                  # leaders elected because the old one died or its copy was damaged
    spu_deaths: int = 0                 # SPUs lost: control link closed, or silent past the timeout
    time_to_new_leader: Histogram = field(default_factory=Histogram)
    status_reports: int = 0             # StatusReports received (each heartbeat carries one)
    # Reconcile passes by what ran them: "periodic" (every 0.1 s), "status-report" (a report
    # that changed something a decision reads), "event" (an SPU registered or was lost, an
    # admin request). An unchanged report runs none.
    reconciles: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RECONCILE_TRIGGERS, 0))
    _lost_at: dict[int, float] = field(default_factory=dict)    # SPU -> when it was lost (monotonic)
    _leaving: set[int] = field(default_factory=set)              # SPUs stopped on purpose (spu remove)

    def spu_leaving(self, spu_id: int) -> None:
        """``spu_id`` is being stopped on purpose: its loss is not a death."""
        self._leaving.add(spu_id)

    def spu_lost(self, spu_id: int, since: float) -> None:
        if spu_id in self._leaving:
            self._leaving.discard(spu_id)
            return
        self.spu_deaths += 1
        self._lost_at[spu_id] = since

    def spu_back(self, spu_id: int) -> None:
        self._lost_at.pop(spu_id, None)

    def elected(self, previous_leader: int, now: float) -> None:
        self.elections += 1
        lost = self._lost_at.get(previous_leader)
        if lost is not None:
            self.time_to_new_leader.observe(max(0.0, now - lost))
