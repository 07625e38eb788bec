"""A follower replica's loop: truncate by leader epoch, then pull batches from the leader.

Runs as one asyncio task per follower replica, for as long as the SC's spec names
the same leader and epoch; a new spec (or a stop) cancels it and the service starts
a fresh one.

Before fetching, the follower asks the leader where its own last epoch ends
(``EpochEndOffset``) and truncates there: records the follower holds beyond that
point were never committed under the new leader and would otherwise let one offset
name two records. It never truncates to its own high watermark (KIP-101).
"""

from __future__ import annotations

import asyncio
import logging

from rillet.ipc import messages as m
from rillet.ipc.errors import RilletError
from rillet.ipc.names import ClusterPaths
from rillet.ipc.async_connection import AsyncConnection

from .replica import Replica

FETCH_MAX_BYTES = 8 * 1024 * 1024
FETCH_WAIT_MS = 500
RETRY_DELAY_S = 0.05


async def follow(replica: Replica, paths: ClusterPaths, log: logging.Logger, on_progress) -> None:
    spec = replica.spec
    me = replica.spu_id
    while True:
        conn = None
        try:
            conn = await AsyncConnection.open(paths.spu_socket(spec.leader), f"spu-{me}-follower")
            await _truncate_by_epoch(conn, replica, spec)
            on_progress()
            while True:
                leo = replica.leo
                reply = await conn.call(lambda cid: m.FollowerFetch(
                    cid, spec.topic, spec.partition, me, spec.leader_epoch, leo, FETCH_MAX_BYTES, FETCH_WAIT_MS),
                    timeout_s=FETCH_WAIT_MS / 1000 + 10)
                before = (replica.leo, replica.hw)
                replica.catch_up_to_log_start(reply.log_start)
                replica.append_replicated(reply.batches, reply.hw)
                if (replica.leo, replica.hw) != before:
                    on_progress()
        except asyncio.CancelledError:
            raise
        except RilletError as exc:
            log.debug("%s: following SPU %d: %s", replica.name, spec.leader, exc)
        except Exception:
            log.exception("%s: follower loop failed", replica.name)
        finally:
            if conn is not None:
                conn.close()
        await asyncio.sleep(RETRY_DELAY_S)


async def _truncate_by_epoch(conn: AsyncConnection, replica: Replica, spec: m.ReplicaSpec) -> None:
    last_epoch = replica.log.last_epoch
    if last_epoch < 0 or replica.leo == 0:
        return
    reply = await conn.call(lambda cid: m.EpochEndOffset(cid, spec.topic, spec.partition, spec.leader_epoch, last_epoch))
    if reply.epoch < 0:
        # The leader knows no epoch as old as ours (Kafka's UNDEFINED_OFFSET): keep only
        # what we know was committed.
        end = replica.hw
    else:
        # KIP-279: the leader answered for the largest epoch it has up to ours; our own
        # log may end that epoch earlier, and the point must be a boundary in our log.
        end = min(reply.end_offset, replica.log.epoch_end_offset(reply.epoch))
    if 0 <= end < replica.leo:
        replica.truncate_to(end)
