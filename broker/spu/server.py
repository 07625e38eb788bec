"""The SPU's sockets: the client listener and the control link to the SC."""

from __future__ import annotations

import asyncio
import logging
import os

import msgspec

from rillet.ipc import messages as m
from rillet.ipc.errors import InvalidArgument, ProtocolError, RilletError
from rillet.ipc.framing import NEED_DATA, FrameDecoder
from rillet.ipc.transport import FramedProtocol, encode_message

from .control import ScConnected, ScLost
from .service import SpuService


class SpuConnection(FramedProtocol):
    """A client (producer, consumer, CLI) talking to this SPU."""

    def __init__(self, service: SpuService, log: logging.Logger) -> None:
        super().__init__(log)
        self.service = service
        self.server_name = f"spu-{service.spu_id}"
        self._routes = {
            m.ProduceRequest: service.produce,
            m.FetchRequest: service.fetch,
            m.OffsetsRequest: service.offsets,
            m.FollowerFetch: self._follower_fetch,
            m.EpochEndOffset: service.epoch_end_offset,
            m.ReportDamage: service.report_damage,
            m.RingAttach: self._attach_ring,
        }
        self._ring = None                # a producer's produce ring (broker/spu/produce_ring.py)
        self._following: dict[int, set[tuple[str, int]]] = {}   # follower SPU -> partitions it fetches here
        self._requests = service.requests

    def _follower_fetch(self, req: m.FollowerFetch):
        if req.follower not in self._following:
            # Once per connection and follower id: the peer's pid cannot change on a connection.
            self.service.check_follower(req.follower, self._peer_pid)
        self._following.setdefault(req.follower, set()).add((req.topic, req.partition))
        return self.service.follower_fetch(req)

    def _attach_ring(self, req: m.RingAttach) -> m.Message:
        listener = self.service.ring_listener
        if listener is None:
            raise InvalidArgument(f"SPU {self.service.spu_id} takes no produce rings (RILLET_PRODUCE_RING=0)")
        if self._ring is not None:
            raise InvalidArgument("this connection has a produce ring already")
        self._ring = listener.attach(self, req)
        return m.RingAttached(req.cid)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._ring is not None and not self._write_paused:
            self._ring.drain()           # not drained while answers piled up unread

    def on_closed(self) -> None:
        if self._ring is not None:
            self._ring.close()
        # A follower's connection closing is the fastest sign that it died: leave the ISR now.
        for follower, keys in self._following.items():
            self.service.follower_disconnected(follower, keys)

    def dispatch(self, msg):
        kind = type(msg)
        route = self._routes.get(kind)
        if route is None:
            raise ProtocolError(f"SPU does not handle {kind.__name__}")
        requests = self._requests
        requests[kind] = requests.get(kind, 0) + 1      # metrics: one dict add per request
        return route(msg)


class ControlLink(asyncio.Protocol):
    """This SPU's connection to the SC: register, receive assignments, send reports.

    The SC learns of this SPU's death when this connection closes. When the SC goes
    away the SPU keeps serving and the same link is connected again to the next SC
    (broker/spu/process.py ``control_loop``): ``closed`` resolves on each loss, and
    each new connection registers afresh. Connecting and losing the link are events
    for the SPU's main loop (broker/spu/loop.py), which decides when to report.
    Reports made while no SC listens are dropped; the first one on the next
    connection carries the whole state.
    """

    # A paused SC (SIGSTOP) reads nothing: reports are snapshots, so past this much
    # unsent data the next ones are dropped instead of queued without bound.
    MAX_UNSENT_BYTES = 1 << 20

    def __init__(self, service: SpuService, log: logging.Logger, stop: asyncio.Event) -> None:
        self.service = service
        self.log = log
        self.stop = stop
        self.transport: asyncio.Transport | None = None
        self._decoder = FrameDecoder()
        self._msg_decoder = m.new_decoder()
        self._encoder = m.new_encoder()
        self.registered = asyncio.get_event_loop().create_future()
        self._report_cid = 1000
        self.closed: asyncio.Future = asyncio.get_event_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._decoder = FrameDecoder()
        self.closed = asyncio.get_event_loop().create_future()
        self._send(m.Hello(1, m.PROTOCOL_VERSION, f"spu-{self.service.spu_id}"))
        self._send(m.RegisterSpu(2, self.service.spu_id, os.getpid()))
        self.service.events.push(ScConnected())

    def data_received(self, data: bytes) -> None:
        try:
            self._decoder.receive_data(data)
            while (frame := self._decoder.next_frame()) is not NEED_DATA:
                try:
                    self._handle(self._msg_decoder.decode(frame))
                except msgspec.DecodeError as exc:
                    raise ProtocolError(f"malformed message from SC: {exc}") from exc
        except RilletError as exc:
            self.log.error("control link: %s; dropping the connection", exc)
            if self.transport is not None:
                self.transport.close()

    def _handle(self, msg) -> None:
        if isinstance(msg, m.UpdateReplicas):
            # A new SC replaces the shared-memory table and then sends every SPU its
            # assignment: fence against the table as it is now.
            self.service.reopen_table()
            self.service.apply(msg)
            self._send(self.service.status_report(msg.cid))
            if not self.registered.done():
                self.registered.set_result(None)
        elif isinstance(msg, m.Shutdown):
            self.log.info("SC asked this SPU to shut down")
            self.stop.set()
        elif isinstance(msg, m.ErrorResponse):
            self.log.error("SC refused this SPU: %s", msg.message)
            self.stop.set()
        # HelloOk and Ok need no action.

    def connection_lost(self, exc) -> None:
        self.transport = None
        self.service.events.push(ScLost())
        if not self.closed.done():
            self.closed.set_result(None)

    def _send(self, msg: m.Message) -> None:
        t = self.transport
        if t is not None and not t.is_closing() and t.get_write_buffer_size() < self.MAX_UNSENT_BYTES:
            t.write(encode_message(self._encoder, msg))

    def report(self, make_report) -> None:
        """Send ``make_report(cid)``, the replicas' state and problems, to the SC (dropped while none listens)."""
        self._report_cid += 1
        self._send(make_report(self._report_cid))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
