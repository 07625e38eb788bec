"""SPUs added to and removed from a running cluster (`rillet cluster spu add | remove`).

The single-host form of Fluvio's SPU groups. Adding starts one more SPU process under
the next id; it takes replicas of topics created from then on (existing partitions
stay where they are, as in Fluvio). Removing never drops a replica: for each partition
on the SPU, a copy is first added on another SPU and the removal waits until the
leader counts that copy in sync; only then does the copy take the SPU's place (and
leadership, at the next epoch, where the SPU led). Then the SPU is stopped, forgotten
and its data deleted. An SPU that died can be removed too when failover left none of
its partitions without another in-sync copy; the copies are then made from those. A removal that times out while copies catch up changes nothing
but the extra copies, which a second attempt reuses.

The decisions are reconcile.py's (next_spu_id, replica_moves, with_replica_added,
handed_over); this module carries them out, one membership change at a time.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from typing import TYPE_CHECKING

from rillet.ipc import messages as m
from rillet.ipc.errors import InsufficientResources, InvalidArgument, RequestTimedOut, SpuNotFound
from rillet.ipc.metadata_table import TableLayout

from . import reconcile
from .reconcile import SpuObserved
from .state import save_state

if TYPE_CHECKING:
    from .process import Controller

STOP_WAIT_S = 5.0           # a removed SPU has this long to exit after Shutdown, then it is killed


class Membership:
    def __init__(self, sc: "Controller") -> None:
        self.sc = sc
        self._lock = asyncio.Lock()     # one add or remove at a time: each plans from the state it sees

    def routes(self) -> dict:
        return {m.AddSpu: self.add_spu, m.RemoveSpu: self.remove_spu}

    async def add_spu(self, msg: m.AddSpu):
        sc = self.sc
        async with self._lock:
            capacity = sc.table.layout.max_spus if sc.table is not None else TableLayout().max_spus
            if len(sc.state.spus) >= capacity:
                raise InsufficientResources(f"the cluster has {len(sc.state.spus)} SPUs; its metadata table holds {capacity}")
            spu_id = reconcile.next_spu_id(sc.state)
            sc.state.spus.append(spu_id)
            sc.observed[spu_id] = SpuObserved(spu_id)
            save_state(sc.paths.metadata_file, sc.state)
            sc.processes.spawn(spu_id)
            sc.publish()
            sc.log.info("added SPU %d", spu_id)
            if not await sc.wait_until(lambda: sc.observed[spu_id].online, msg.timeout_ms / 1000):
                raise RequestTimedOut(f"SPU {spu_id} was added but was not Online within {msg.timeout_ms} ms; "
                                      f"see {sc.paths.spu_log_file(spu_id)}")
            return m.SpuList(msg.cid, [s for s in sc.list_spus(msg).spus if s.id == spu_id])

    async def remove_spu(self, msg: m.RemoveSpu):
        sc = self.sc
        spu = msg.spu_id
        async with self._lock:
            if spu not in sc.state.spus:
                raise SpuNotFound(f"no SPU {spu} in this cluster (its SPUs: {', '.join(map(str, sc.state.spus))})")
            if not sc.observed[spu].online:
                # A dead SPU can go when every partition it holds has another in-sync copy
                # (failover already moved its leaderships); copies are made from those.
                stuck = reconcile.stranded(sc.state, spu)
                if stuck:
                    raise InvalidArgument(
                        f"SPU {spu} is not online and holds the only in-sync copy of {', '.join(stuck[:5])}"
                        f"{' ...' if len(stuck) > 5 else ''}; start it first (rillet cluster spu start {spu})")
            deadline = time.monotonic() + msg.timeout_ms / 1000
            moves = reconcile.replica_moves(
                sc.state, {n: t.config.replication for n, t in sc.state.topics.items()}, spu)
            self._change(moves, lambda p, target: reconcile.with_replica_added(p, target))
            if not await sc.wait_until(lambda: self._caught_up(moves), max(deadline - time.monotonic(), 0)):
                raise RequestTimedOut(f"the copies of SPU {spu}'s replicas did not catch up within {msg.timeout_ms} ms; "
                                      f"SPU {spu} was not removed (run the command again to go on)")
            await self._fence_led(spu, moves, deadline, msg.timeout_ms)
            self._change(moves, lambda p, target: reconcile.handed_over(p, spu, target))
            await self._stop(spu)
            sc.state.spus.remove(spu)
            sc.observed.pop(spu, None)
            save_state(sc.paths.metadata_file, sc.state)
            sc.publish()
            shutil.rmtree(sc.paths.spu_data_dir(spu), ignore_errors=True)
            sc.log.info("removed SPU %d; its %d replicas moved", spu, len(moves))
            return m.Ok(msg.cid)

    def _change(self, moves, change) -> None:
        """Apply ``change`` to each moved partition, persist, and tell every SPU concerned."""
        sc, told = self.sc, set()
        for topic, partition, target in moves:
            if topic not in sc.state.topics:
                continue                         # deleted meanwhile: nothing left to move
            parts = sc.state.topics[topic].partitions
            told.update(parts[partition].replicas)
            parts[partition] = change(parts[partition], target)
            told.update(parts[partition].replicas)
        save_state(sc.paths.metadata_file, sc.state)
        sc.push_assignments(told)
        sc.reconcile_now()

    async def _fence_led(self, spu: int, moves, deadline: float, timeout_ms: int) -> None:
        """For the partitions ``spu`` leads: fence it (reconcile.fenced: published, not pushed),
        then wait until each new copy reports the leader's last offset, so that handing over
        loses no record, ReadUncommitted-acknowledged ones included."""
        sc = self.sc
        led = [(t, p, target) for t, p, target in moves
               if t in sc.state.topics and sc.state.topics[t].partitions[p].leader == spu]
        if not led or not sc.observed[spu].online:
            return
        for t, p, _target in led:
            parts = sc.state.topics[t].partitions
            parts[p] = reconcile.fenced(parts[p])
        save_state(sc.paths.metadata_file, sc.state)
        sc.publish()
        fenced_at = time.monotonic()

        def copied() -> bool:
            # A report of the leader sent after the fence holds its final offsets (reports are
            # coalesced over REPORT_INTERVAL_S = 0.05 s; heartbeats carry one every 0.25 s).
            if sc.observed[spu].last_seen < fenced_at + 0.1:
                return False
            return all(reconcile.reported_leo(sc.observed, target, t, p) >= reconcile.reported_leo(sc.observed, spu, t, p)
                       for t, p, target in led if t in sc.state.topics)
        if not await sc.wait_until(copied, max(deadline - time.monotonic(), 0.5)):
            sc.push_assignments({s for t, p, _ in led if t in sc.state.topics
                                 for s in sc.state.topics[t].partitions[p].replicas})   # lead on, at the new epoch
            raise RequestTimedOut(f"the copies of SPU {spu}'s partitions did not reach its last offset within "
                                  f"{timeout_ms} ms; SPU {spu} was not removed (run the command again to go on)")

    def _caught_up(self, moves) -> bool:
        topics = self.sc.state.topics
        return all(target in topics[t].partitions[p].in_sync for t, p, target in moves if t in topics)

    async def _stop(self, spu: int) -> None:
        sc = self.sc
        conn = sc.sessions.get(spu)
        if conn is not None:
            sc.stats.spu_leaving(spu)            # metrics: removed, not dead
            conn.send(m.Shutdown(next(sc._cids)))
        # Its control link must be gone (spu_disconnected has run) before it is forgotten.
        if not await sc.wait_until(lambda: spu not in sc.sessions and not sc.processes.running(spu), STOP_WAIT_S):
            sc.log.warning("removed SPU %d did not stop within %.0f s; killing it", spu, STOP_WAIT_S)
        sc.processes.kill(spu)                   # forgets it too
        await sc.wait_until(lambda: spu not in sc.sessions, STOP_WAIT_S)
