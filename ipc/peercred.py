"""Who is at the other end of a Unix socket (SO_PEERCRED), for both sides of a connection.

Servers refuse clients of another uid (ipc/transport.py); clients refuse a server of another
uid, so a socket planted by another local user (in a runtime directory it managed to swap)
never receives a request or a record. Both read the kernel's credentials of the peer, taken
at connect/listen time, which the peer cannot forge.
"""

from __future__ import annotations

import os
import socket
import struct

from .errors import ForeignPeer

_PEERCRED = struct.Struct("3i")     # struct ucred: pid, uid, gid


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the peer of a connected Unix socket."""
    return _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))


def peer_uid(sock: socket.socket) -> int:
    return peer_credentials(sock)[1]


def require_own_user(sock: socket.socket, where: str) -> None:
    """Raise if the server behind ``sock`` (connected to ``where``) is not of our uid."""
    pid, uid, _gid = peer_credentials(sock)
    if uid != os.getuid():
        raise ForeignPeer(f"refusing {where}: the process listening there (pid {pid}) runs as uid {uid}, "
                              f"not as this user (uid {os.getuid()})")
