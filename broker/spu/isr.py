"""Leader-side replication decisions, as pure code: who is in sync, and the high watermark.

Inputs are events with the time passed in (a follower fetched from offset X, a
follower's connection closed, time went by); outputs are the in-sync set (ISR) and
the high watermark (HW). No sockets, no clocks read here.

Rules (Kafka's, which Fluvio documents but does not implement):

* A follower's fetch offset is its log end offset (LEO): it holds every record below.
* A follower is *caught up* when it fetches from at least the leader's LEO as it was
  when the leader answered that follower's previous fetch (under a steady stream
  of produces a follower can never equal the moving LEO, but it can keep pace).
* It joins the ISR once caught up with an offset at or past the HW; it leaves when it
  has not been caught up for ``lag_max_s``, or at once when its connection closes
  (a dead follower must not stall ReadCommitted producers for the whole lag window).
* HW = the smallest LEO over the ISR (the leader included). A member whose LEO is
  not known yet (the leader was just elected) holds the HW where it is. The HW
  never moves backwards.
"""

from __future__ import annotations

from dataclasses import dataclass

NEVER = float("-inf")


@dataclass
class FollowerProgress:
    leo: int | None = None             # last fetch offset; None until the follower fetches from this leader
    last_caught_up: float = NEVER      # when it was last caught up
    leader_leo_at_last_answer: int | None = None   # unknown until the leader has answered it once


class LeaderState:
    def __init__(self, leader: int, replicas: list[int], in_sync: list[int], *, lag_max_s: float, now: float,
                 hw: int) -> None:
        self.leader = leader
        self.lag_max_s = lag_max_s
        self.followers = {r: FollowerProgress() for r in replicas if r != leader}
        # Followers the SC last knew in sync start in the ISR (with an unknown LEO): safe, since
        # they hold the HW still until they fetch, and they get the lag window to do so.
        self.isr = {leader} | {r for r in in_sync if r in self.followers}
        for r in self.isr - {leader}:
            self.followers[r].last_caught_up = now
        self.hw = hw

    def on_fetch(self, follower: int, offset: int, leader_leo: int, now: float) -> bool:
        """A follower fetched from ``offset``. Returns True if the ISR changed."""
        progress = self.followers.get(follower)
        if progress is None:
            return False
        progress.leo = offset
        previous = progress.leader_leo_at_last_answer
        if offset >= leader_leo or (previous is not None and offset >= previous):
            progress.last_caught_up = now
        if follower not in self.isr and progress.last_caught_up == now and offset >= self.hw:
            self.isr.add(follower)
            return True
        return False

    def on_answer(self, follower: int, leader_leo: int) -> None:
        """The leader answered ``follower`` while its own LEO was ``leader_leo``."""
        progress = self.followers.get(follower)
        if progress is not None:
            progress.leader_leo_at_last_answer = leader_leo

    def on_disconnect(self, follower: int) -> bool:
        if follower in self.isr and follower != self.leader:
            self.isr.discard(follower)
            return True
        return False

    def expire(self, now: float) -> bool:
        """Drop followers that have not been caught up within the lag window."""
        late = {f for f in self.isr - {self.leader} if now - self.followers[f].last_caught_up > self.lag_max_s}
        self.isr -= late
        return bool(late)

    def high_watermark(self, leader_leo: int) -> int:
        """Recompute the HW from the ISR; returns it (never lower than before)."""
        leos = [leader_leo]
        for f in self.isr - {self.leader}:
            leo = self.followers[f].leo
            if leo is None:
                return self.hw
            leos.append(leo)
        self.hw = max(self.hw, min(leos))
        return self.hw

    def in_sync(self) -> list[int]:
        return sorted(self.isr)
