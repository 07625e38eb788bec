"""File-system helpers for the storage layer: the one place where OSError becomes StorageError.

Every storage module goes through these for the operations that can fail on a healthy
machine (ENOSPC at preallocation, EIO at fsync) so the message always names the action,
the file and the errno symbol: ``cannot preallocate 4096 bytes for /d/00000000000000000000.log:
No space left on device (ENOSPC)``.

Mapping rule: a map that callers may still hold views into cannot be closed (mmap raises
BufferError). ``release_map`` then drops our reference instead; the kernel mapping lives on
until the last view is released, so a late reader sees valid memory and never crashes.
"""

from __future__ import annotations

import errno
import mmap
import os
from pathlib import Path

from rillet.ipc.errors import StorageError

PAGE_SIZE = mmap.PAGESIZE


def storage_error(exc: OSError, action: str, path: Path | str) -> StorageError:
    """Translate ``exc`` into a StorageError naming ``action``, ``path`` and the errno symbol."""
    symbol = errno.errorcode.get(exc.errno, "no errno") if exc.errno else "no errno"
    reason = exc.strerror or str(exc)
    return StorageError(f"cannot {action} {path}: {reason} ({symbol})")


def preallocate(fd: int, size: int, path: Path) -> None:
    """Reserve blocks so later stores into a map of the file cannot hit SIGBUS on a full disk."""
    try:
        if os.fstat(fd).st_size < size:
            os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        raise storage_error(exc, f"preallocate {size} bytes for", path) from exc


def map_file(fd: int, size: int, path: Path, *, writable: bool) -> mmap.mmap | None:
    """Map the first ``size`` bytes of ``fd`` (MAP_SHARED); None for an empty file."""
    if size == 0:
        return None
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    try:
        return mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=prot)
    except OSError as exc:
        raise storage_error(exc, f"map {size} bytes of", path) from exc


def release_map(m: mmap.mmap | None) -> bool:
    """Unmap ``m`` if no view into it is alive; report whether it was unmapped.

    When views are still exported, the reference is simply dropped by the caller: the
    memoryviews keep the mmap object (and the kernel mapping) alive until they go.
    """
    if m is None or m.closed:
        return True
    try:
        m.close()
    except BufferError:
        return False
    return True


def truncate_file(path: Path, size: int) -> None:
    try:
        os.truncate(path, size)
    except OSError as exc:
        raise storage_error(exc, f"truncate to {size} bytes", path) from exc


def fsync_path(path: Path) -> None:
    """fsync a file by name (also writes back pages dirtied through a shared map)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise storage_error(exc, "fsync", path) from exc


def fsync_directory(directory: Path) -> None:
    """Make created, renamed and removed names in ``directory`` durable."""
    fsync_path(directory)


def remove_file(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise storage_error(exc, "remove", path) from exc


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves either the old or the new file whole.

    Writes a temporary file in the same directory, fsyncs it, renames it over ``path``
    and fsyncs the directory (the ALICE ordering). The temporary name starts with a dot
    and ends in ``.tmp``, so a crash leaves only a stray file that loaders ignore.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise storage_error(exc, "write", path) from exc
    fsync_directory(path.parent)
