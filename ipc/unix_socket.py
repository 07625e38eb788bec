"""Client-side Unix socket set-up: connecting through a full backlog, and who is at the other end.

A server whose listen backlog is full answers a connect with EAGAIN at once; that is a busy
server, not a dead one, so ``connect_unix`` retries it with a short backoff until its deadline.

Who is at the other end (SO_PEERCRED), for both sides of a connection:

Servers refuse clients of another uid (ipc/transport.py); clients refuse a server of another
uid, so a socket planted by another local user (in a runtime directory it managed to swap)
never receives a request or a record. Both read the kernel's credentials of the peer, taken
at connect/listen time, which the peer cannot forge.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time

from .errors import ForeignPeer

_PEERCRED = struct.Struct("3i")     # struct ucred: pid, uid, gid


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the peer of a connected Unix socket."""
    return _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))


def listener_pid(path: str, timeout_s: float = 0.2) -> int | None:
    """The pid of the process serving the Unix socket at ``path`` (its SO_PEERCRED, taken when it
    called listen), or None when nothing answers there in ``timeout_s``. The connection is closed
    at once, before any Hello (the server drops it quietly)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(path)
        return peer_credentials(sock)[0]
    except OSError:
        return None
    finally:
        sock.close()


def peer_uid(sock: socket.socket) -> int:
    return peer_credentials(sock)[1]


def require_own_user(sock: socket.socket, where: str) -> None:
    """Raise if the server behind ``sock`` (connected to ``where``) is not of our uid."""
    pid, uid, _gid = peer_credentials(sock)
    if uid != os.getuid():
        raise ForeignPeer(f"refusing {where}: the process listening there (pid {pid}) runs as uid {uid}, "
                              f"not as this user (uid {os.getuid()})")


def connect_unix(path: str, timeout_s: float) -> socket.socket:
    """A connected, blocking Unix stream socket with ``timeout_s`` set, checked to be of our uid.

    EAGAIN (the server's backlog is full) is retried every few ms until ``timeout_s``; any
    other OSError is raised as it is, for the caller to translate.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.002
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout_s)
        try:
            sock.connect(path)
            require_own_user(sock, path)
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EAGAIN or time.monotonic() + delay > deadline:
                raise
        except BaseException:
            sock.close()
            raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
