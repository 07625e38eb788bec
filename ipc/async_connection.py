"""Client side of a framed connection inside an asyncio process (an SPU following its
leader): an asyncio socket shell around the sans-IO ClientSession (ipc/session.py).
One request at a time; answers matched by correlation id."""

from __future__ import annotations

import asyncio
from pathlib import Path

from . import messages as m
from .errors import BrokenConnection, Timeout
from .framing import DEFAULT_MAX_FRAME_BYTES
from .session import NEED_DATA, ClientSession, raise_for_error
from .unix_socket import require_own_user

_READ_CHUNK = 256 * 1024


class AsyncConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                 session: ClientSession) -> None:
        self._reader, self._writer, self.path = reader, writer, path
        self._session = session

    @classmethod
    async def open(cls, path: Path | str, client_id: str, timeout_s: float = 30.0) -> "AsyncConnection":
        try:
            reader, writer = await asyncio.open_unix_connection(str(path), limit=DEFAULT_MAX_FRAME_BYTES)
        except OSError as exc:
            raise BrokenConnection(f"cannot connect to {path}: {exc.strerror or exc}") from exc
        try:
            require_own_user(writer.get_extra_info("socket"), str(path))
            conn = cls(reader, writer, str(path), ClientSession(str(path), client_id))
            writer.write(conn._session.start())
            while not conn._session.greeted:
                answer = await conn._next_answer(timeout_s)
                if answer is not None and answer.cid == 0:
                    raise_for_error(answer.message)
        except BaseException:
            writer.close()
            raise
        return conn

    async def call(self, make, timeout_s: float = 30.0):
        """Send ``make(cid)`` and return the answer; an ErrorResponse is raised as its error."""
        session = self._session
        cid = session.next_cid()
        self._writer.write(session.send(make(cid)))
        while True:
            answer = await self._next_answer(timeout_s)
            if answer is not None and answer.cid in (cid, 0):
                return raise_for_error(answer.message)

    async def _next_answer(self, timeout_s: float):
        """The next answer, or None once the handshake was taken and nothing else is buffered."""
        session = self._session
        greeted = session.greeted
        while (answer := session.next_event()) is NEED_DATA:
            if session.greeted != greeted:
                return None
            try:
                data = await asyncio.wait_for(self._reader.read(_READ_CHUNK), timeout_s)
            except asyncio.TimeoutError:
                raise Timeout(f"no answer from {self.path} within {timeout_s} s") from None
            except OSError as exc:
                raise BrokenConnection(f"connection to {self.path} broken: {exc}") from exc
            if not data:
                raise BrokenConnection(f"connection to {self.path} closed by the peer")
            session.receive_data(data)
        return answer

    def close(self) -> None:
        try:
            self._writer.close()
        except Exception:
            pass


__all__ = ["AsyncConnection"]
