"""The SPU's control decisions, as one pure function: ``decide(state, events, now) -> Decision``.

Replicas, follower loops and the control link do not call up the stack when something
happens; they put an event in the SPU's queue (broker/spu/loop.py), and the SPU's main
loop drains it and asks :func:`decide` what to do: report to the SC now or later,
checkpoint high watermarks, let a replica's HW move once its ISR change is reported,
expire lagging followers, flush, apply retention, give up on a lost SC. The timers are
inputs too: ``now`` is passed in, and the decision says when to wake next. No sockets,
files or clocks here (the SC's counterpart is broker/sc/reconcile.py).

The data plane stays outside: a produce, a fetch and the positions a leader publishes for
direct readers do not wait for this loop. A produce only raises the coalesced
"offsets moved" flag (one attribute test when it is already up).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

NEVER = float("-inf")
# Event-loop timers may fire up to a clock tick early (asyncio's clock_resolution, uvloop's
# 1 ms): a deadline this close counts as reached, instead of one more wake-up to find it is.
SLACK_S = 0.001


# --- events: what happened (put in the queue by replicas, followers and the control link) ---

@dataclass(frozen=True, slots=True)
class OffsetsMoved:
    """Some replica's offsets changed since the last report (coalesced: at most one per drain)."""


OFFSETS_MOVED = OffsetsMoved()


@dataclass(frozen=True, slots=True)
class IsrChanged:
    """A leader's in-sync set changed. Its HW holds still until the SC has been told
    (a record acknowledged under the new set must not be lost to an election the SC
    makes from the old one), so this is reported at once, then released."""
    key: tuple[str, int]


@dataclass(frozen=True, slots=True)
class ProblemsChanged:
    """A replica's copy was found damaged or missing, or finished its rebuild: reported at
    once (the SC moves leadership off a damaged leader copy)."""


PROBLEMS_CHANGED = ProblemsChanged()


@dataclass(frozen=True, slots=True)
class ScConnected:
    """The control link to an SC is up (the SPU has registered with it)."""


@dataclass(frozen=True, slots=True)
class ScLost:
    """The control link closed: the SC died, was restarted or dropped this SPU."""


Event = OffsetsMoved | IsrChanged | ProblemsChanged | ScConnected | ScLost


# --- settings, state, actions ---

@dataclass(frozen=True, kw_only=True)
class Timings:
    report_interval_s: float = 0.05    # offset changes are coalesced into one report per interval
    heartbeat_s: float = 0.25          # the SC declares an SPU dead after 1.5 s without one
    expire_interval_s: float = 0.1     # ISR lag is 2 s and flush intervals are >= 1 ms: 100 ms is fine enough
    retention_check_s: float = 10.0    # Fluvio looks for expired segments every 10 s
    sc_lost_timeout_s: float = 60.0    # no SC this long and no supervisor: the cluster is gone

    def __post_init__(self) -> None:
        for name in ("report_interval_s", "heartbeat_s", "expire_interval_s", "retention_check_s",
                     "sc_lost_timeout_s"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


def retention_check_s(environ=os.environ) -> float:
    """``RILLET_RETENTION_CHECK_S`` (tests shorten it); 10 s unless set to a positive number."""
    try:
        value = float(environ.get("RILLET_RETENTION_CHECK_S", "10"))
    except ValueError:
        return 10.0
    return value if value > 0 else 10.0


@dataclass(frozen=True)
class ControlState:
    connected: bool = False
    sc_lost_since: float = 0.0          # when the SC was lost, or the SPU started (never connected yet)
    last_report_at: float = NEVER       # last report (or, with no SC, last HW checkpoint pass)
    next_expire_at: float = NEVER
    next_retention_at: float = NEVER

    @classmethod
    def start(cls, now: float) -> "ControlState":
        return cls(sc_lost_since=now)


@dataclass(frozen=True)
class Actions:
    """What the main loop does, in this order."""
    checkpoint_hw: bool = False             # write due HW checkpoints (throttled per replica)
    report: bool = False                    # send every replica's status to the SC
    release_hw: tuple[tuple[str, int], ...] = ()   # ISR changes now told: let these HWs move
    expire_isr: bool = False                # drop followers that stopped keeping up
    flush_due: bool = False                 # fsync replicas whose flush interval passed
    retention: bool = False                 # delete segments past retention
    check_replicas: bool = False            # look at replicas' files (once a second) and scrub a slice
    stop_unless_supervised: bool = False    # no SC for too long: stop if no supervisor lives

    def __bool__(self) -> bool:
        return bool(self.checkpoint_hw or self.report or self.release_hw or self.expire_isr or self.flush_due
                    or self.retention or self.check_replicas or self.stop_unless_supervised)


@dataclass(frozen=True)
class Decision:
    state: ControlState
    actions: Actions = field(default_factory=Actions)
    wake_at: float = float("inf")           # decide again at this time unless an event comes first


def decide(state: ControlState, events: list, now: float, timings: Timings = Timings(), *,
           quiet: bool = False) -> Decision:
    """Everything the SPU's control loop does next, from its state, the drained events and the time.

    * Reports: at once on an ISR change (the SC elects from the ISR) or a replica problem; for moved offsets at
      most once per ``report_interval_s`` (the first change after a quiet spell goes at once);
      otherwise every ``heartbeat_s``. With no SC connected the same pass only checkpoints HWs.
    * Replicas whose ISR changed get their HW released after the report, never before.
    * ISR expiry with flush-on-interval, and the replicas' file checks and scrub slice, every
      ``expire_interval_s``; retention every
      ``retention_check_s``; both also on the first call. ``quiet`` (no replica leads followers,
      flushes on an interval or has a scrub under way: ``SpuService.quiet``): that pass only
      comes with the next heartbeat, so an idle SPU wakes 4 times a second, not 14; the file
      checks are once a second anyway, and a pass is never more than ``heartbeat_s`` away when
      work appears.
    * With no SC for ``sc_lost_timeout_s``: stop unless a supervisor lives, then wait as long again.
    """
    connected, lost_since = state.connected, state.sc_lost_since
    moved = urgent = False
    changed: dict[tuple[str, int], None] = {}    # ordered, without duplicates
    for event in events:
        if isinstance(event, OffsetsMoved):
            moved = True
        elif isinstance(event, IsrChanged):
            changed[event.key] = None
        elif isinstance(event, ProblemsChanged):
            urgent = True
        elif isinstance(event, ScConnected):
            connected = True
        elif isinstance(event, ScLost):
            if connected:
                lost_since = now
            connected = False
        else:
            raise TypeError(f"not an SPU control event: {event!r}")

    late = now + SLACK_S
    since = late - state.last_report_at
    due = bool(changed) or urgent or since >= timings.heartbeat_s or (moved and since >= timings.report_interval_s)
    expire = late >= state.next_expire_at
    retention = late >= state.next_retention_at
    give_up = not connected and now - lost_since > timings.sc_lost_timeout_s

    last_report_at = now if due else state.last_report_at
    if expire:
        next_expire_at = last_report_at + timings.heartbeat_s if quiet else now + timings.expire_interval_s
    else:
        next_expire_at = state.next_expire_at
    new = replace(
        state, connected=connected,
        sc_lost_since=now if give_up else lost_since,
        last_report_at=last_report_at,
        next_expire_at=next_expire_at,
        next_retention_at=now + timings.retention_check_s if retention else state.next_retention_at,
    )
    actions = Actions(checkpoint_hw=due, report=due and connected, release_hw=tuple(changed),
                      expire_isr=expire, flush_due=expire, retention=retention, check_replicas=expire,
                      stop_unless_supervised=give_up)
    # Moved offsets not reported now are reported once the interval since the last report is over.
    report_at = new.last_report_at + (timings.report_interval_s if moved and not due else timings.heartbeat_s)
    wake_at = min(report_at, new.next_expire_at, new.next_retention_at)
    if not new.connected:
        wake_at = min(wake_at, new.sc_lost_since + timings.sc_lost_timeout_s)
    return Decision(new, actions, wake_at)
