"""The metadata table in POSIX shared memory: the only module that touches posix_ipc.

The per-SPU positions tables (positions_shm.py) are created and opened through
:func:`create_raw` and :func:`open_raw` here, under the same rules.

The SC creates one object per cluster (``names.ClusterPaths.shm_name``) with
:meth:`SharedTable.create` and is its only writer; clients map it read-only with
:meth:`TableReader.open`. The table's format lives in ``metadata_table.py``.

Creation is exclusive (O_CREAT | O_EXCL) with mode 0600. An object that already
exists is judged before anything is mapped:

* owned by another uid, or with any group/other permission bit: refused
  (SharedMemoryRefused), since anyone else able to write it could steer clients
  to the wrong leader;
* ours, written by an SC that is still alive: ClusterAlreadyRunning;
* ours and stale (its SC crashed without unlinking it): unlinked and created
  afresh, which also resets a seqlock counter a dead writer left odd.

Two SCs of one cluster must never race to create the table (the SC's pid file
prevents it): the loser could take the winner's object, caught between creation
and initialisation, for a stale one.

An SC restarted on a running cluster takes the existing object over with
:meth:`SharedTable.attach` instead (same object, its generation goes on, the writer
pid changes), so readers keep their mapping and see its next write. A reader whose
object was replaced (a cluster stopped and started again) must open the new one
(the old mapping stays valid but frozen, its ``sc_pid`` dead).
:meth:`TableReader.is_current` tells, with one stat call, whether the name still
names the object a reader maps (same device and inode).
posix_ipc and OS errors are translated here, once, into rillet errors.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import stat
import struct
from typing import Iterable

import posix_ipc
import psutil

from .errors import (
    Closed,
    ClusterAlreadyRunning,
    ClusterNotRunning,
    MetadataTableError,
    SharedMemoryRefused,
)
from .metadata_table import (
    HEADER_SIZE,
    PartitionRow,
    SpuRow,
    TableLayout,
    TableSnapshot,
    init_table,
    peek_sc_pid,
    read_generation,
    read_header,
    read_snapshot,
    write_snapshot,
)
from .seqlock import DEFAULT_MAX_RETRIES
from .metadata_table import SEQ_OFFSET

_U64_SEQ = struct.Struct("<Q")

_MODE = 0o600
# A stale object is replaced; if another process keeps recreating it in between, give up.
_CREATE_ATTEMPTS = 3


def _shm_path(name: str) -> str:
    """Where Linux shows the object, for messages."""
    return "/dev/shm/" + name.lstrip("/")


def _check_owner(name: str, st: os.stat_result) -> None:
    uid = os.geteuid()
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != uid or mode & 0o077:
        raise SharedMemoryRefused(
            f"refusing shared-memory object {name}: owner uid {st.st_uid}, mode {mode:04o}; rillet needs "
            f"owner uid {uid} and mode {_MODE:04o}. If it is left over, remove {_shm_path(name)}"
        )


def _refused_unreadable(name: str, exc: BaseException) -> SharedMemoryRefused:
    """An object we may not even open: say whose it is when Linux lets us see."""
    try:
        st = os.stat(_shm_path(name))
        detail = f"owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}"
    except OSError:
        detail = "owner and mode unknown"
    return SharedMemoryRefused(f"refusing shared-memory object {name}: cannot open it ({exc}); {detail}")


def _open_existing(name: str, *, read_only: bool) -> posix_ipc.SharedMemory:
    try:
        return posix_ipc.SharedMemory(name, 0, read_only=read_only)
    except posix_ipc.ExistentialError:
        raise
    except posix_ipc.PermissionsError as exc:
        raise _refused_unreadable(name, exc) from exc
    except (posix_ipc.Error, OSError) as exc:
        raise MetadataTableError(f"cannot open shared-memory object {name}: {exc}") from exc


def _open_checked(name: str, *, read_only: bool) -> tuple[posix_ipc.SharedMemory, os.stat_result]:
    """Open an existing object and check its owner and mode (_check_owner); its fd is closed
    again on any failure. ExistentialError passes through (each caller names what is missing)."""
    shm = _open_existing(name, read_only=read_only)
    try:
        st = os.fstat(shm.fd)
        _check_owner(name, st)
    except BaseException:
        shm.close_fd()
        raise
    return shm, st


def _open_sized(name: str, min_size: int, error: type, missing: str,
                uninitialised: str) -> tuple[posix_ipc.SharedMemory, os.stat_result]:
    """:func:`_open_checked` read-only, and at least ``min_size`` bytes: ``error(missing)`` when
    there is no such object, ``error(uninitialised)`` when it is smaller (its creator is still
    sizing it)."""
    try:
        shm, st = _open_checked(name, read_only=True)
    except posix_ipc.ExistentialError as exc:
        raise error(missing) from exc
    if st.st_size < min_size:
        shm.close_fd()
        raise error(uninitialised)
    return shm, st


def _map(shm: posix_ipc.SharedMemory, size: int, *, writable: bool) -> mmap.mmap:
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    try:
        return mmap.mmap(shm.fd, size, flags=mmap.MAP_SHARED, prot=prot)
    except (OSError, ValueError) as exc:
        raise MetadataTableError(f"cannot map shared-memory object {shm.name}: {exc}") from exc
    finally:
        shm.close_fd()


def _process_alive(pid: int) -> bool:
    if pid <= 0:                        # psutil.pid_exists(0) is True on Linux
        return False
    try:
        return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:                # exists but not inspectable (another user's): alive
        return True


def _writer_alive(name: str, peek=peek_sc_pid) -> bool:
    """Judge an existing object (see the module docstring); True if its writer lives
    (``peek`` finds the writer's pid in the object's header).

    Raises SharedMemoryRefused for a foreign or unsafe object; ExistentialError
    passes through when it vanished meanwhile.
    """
    shm, st = _open_checked(name, read_only=True)
    try:
        header = os.pread(shm.fd, HEADER_SIZE, 0) if st.st_size >= HEADER_SIZE else b""
    except OSError as exc:
        raise MetadataTableError(f"cannot read shared-memory object {name}: {exc.strerror or exc}") from exc
    finally:
        shm.close_fd()
    pid = peek(header)                  # None: never initialised, its creator died first
    return pid is not None and _process_alive(pid)


def _create_exclusive(name: str) -> posix_ipc.SharedMemory:
    """Create an empty object; the caller sizes it (and unlinks it on failure)."""
    old_umask = os.umask(0o077)         # process-wide, briefly; can only make modes stricter
    try:
        return posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=_MODE)
    except posix_ipc.ExistentialError:
        raise
    except posix_ipc.PermissionsError as exc:
        raise SharedMemoryRefused(f"cannot create shared-memory object {name}: {exc}") from exc
    except (posix_ipc.Error, OSError, ValueError) as exc:
        raise MetadataTableError(f"cannot create shared-memory object {name}: {exc}") from exc
    finally:
        os.umask(old_umask)


def _size(shm: posix_ipc.SharedMemory, size: int) -> None:
    """Give the object ``size`` bytes of real memory now: with only ftruncate, a
    full /dev/shm would surface later as SIGBUS on the first write to a page."""
    try:
        os.fchmod(shm.fd, _MODE)
        os.ftruncate(shm.fd, size)
        try:
            os.posix_fallocate(shm.fd, 0, size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
    except OSError as exc:
        raise MetadataTableError(
            f"cannot size shared-memory object {shm.name} to {size} bytes: {exc.strerror or exc}"
        ) from exc


def _create_replacing_stale(name: str, peek, running_message: str) -> posix_ipc.SharedMemory:
    """Create ``name`` exclusively, replacing a stale object (its writer dead; ``peek``
    reads the writer's pid from a header). ClusterAlreadyRunning with ``running_message``
    when the writer lives; the caller sizes the object and unlinks it on failure."""
    for _ in range(_CREATE_ATTEMPTS):
        try:
            return _create_exclusive(name)
        except posix_ipc.ExistentialError:
            pass
        try:
            if _writer_alive(name, peek):
                raise ClusterAlreadyRunning(running_message) from None
        except posix_ipc.ExistentialError:
            continue            # vanished meanwhile: try to create again
        unlink_if_exists(name)
    raise MetadataTableError(f"shared-memory object {name} kept reappearing while replacing it")


def unlink_if_exists(name: str) -> bool:
    """Remove the object ``name``; False if there was none."""
    try:
        posix_ipc.unlink_shared_memory(name)
    except posix_ipc.ExistentialError:
        return False
    except (posix_ipc.Error, OSError) as exc:
        raise MetadataTableError(f"cannot unlink shared-memory object {name}: {exc}") from exc
    return True



def _create_initialised(name: str, peek_pid, busy: str, size: int, map_it, init):
    """Create ``name`` (replacing a stale object, refusing a live owner's with ``busy``), size
    it, ``map_it(shm, size)`` (which closes the fd) and ``init(mapping)``; the mapping. On any
    failure nothing is left behind: the mapping closed, the fd closed, the name unlinked."""
    shm = _create_replacing_stale(name, peek_pid, busy)
    mapping = None
    try:
        _size(shm, size)
        mapping = map_it(shm, size)
        init(mapping)
    except BaseException:
        if mapping is not None:
            mapping.close()
        if shm.fd >= 0:
            shm.close_fd()
        unlink_if_exists(name)
        raise
    return mapping

class SharedTable:
    """The SC's writable mapping of the table. Build with :meth:`create`.

    As a context manager it closes and unlinks on exit: the table lives exactly
    as long as the SC that owns it.
    """

    def __init__(self, name: str, mapping: mmap.mmap, layout: TableLayout, *, new_pid: int | None = None) -> None:
        self._name = name
        self._map: mmap.mmap | None = mapping
        self._layout = layout
        self._unlinked = False
        self._new_pid = new_pid          # recorded by the next write (a table taken over)

    @classmethod
    def create(cls, name: str, layout: TableLayout, sc_pid: int) -> "SharedTable":
        """Create ``name`` exclusively (mode 0600), size it, map it, format it.

        Raises SharedMemoryRefused (foreign owner or unsafe mode),
        ClusterAlreadyRunning (its SC is alive), MetadataTableError (OS failure).
        A stale object from a crashed SC is replaced silently.
        """
        mapping = _create_initialised(
            name, peek_sc_pid, f"metadata table {name} belongs to a running SC; stop that cluster first",
            layout.size, lambda shm, size: _map(shm, size, writable=True),
            lambda mapping: init_table(mapping, layout, sc_pid))
        return cls(name, mapping, layout)

    @classmethod
    def attach(cls, name: str, layout: TableLayout, sc_pid: int) -> "SharedTable":
        """Take over the existing table ``name`` of this cluster (its SC died): map it
        writable; the next :meth:`write` records ``sc_pid`` and the next generation.

        Readers keep their mapping and see that write. The caller must know that no
        other writer lives (the SC checks its pid file): the recorded pid is not
        trusted, it may have been reused. A table a writer left mid-update (seqlock
        odd) is fine: the next write completes it (see ipc/seqlock.py).
        Raises ClusterNotRunning (no such object), SharedMemoryRefused (foreign owner
        or unsafe mode), LayoutVersionMismatch or MetadataTableError (not a table of
        this layout: the caller creates a new one).
        """
        try:
            shm, st = _open_checked(name, read_only=False)
        except posix_ipc.ExistentialError as exc:
            raise ClusterNotRunning(f"no metadata table {name} to take over") from exc
        if st.st_size != layout.size:
            shm.close_fd()
            raise MetadataTableError(f"metadata table {name} has {st.st_size} bytes, this layout {layout.size}")
        mapping = _map(shm, layout.size, writable=True)           # closes the fd
        try:
            header = read_header(mapping)
            if header.layout != layout:
                raise MetadataTableError(f"metadata table {name} has layout {header.layout}, wanted {layout}")
        except BaseException:
            mapping.close()
            raise
        return cls(name, mapping, layout, new_pid=sc_pid)

    @property
    def name(self) -> str:
        return self._name

    @property
    def layout(self) -> TableLayout:
        return self._layout

    def _mapping(self) -> mmap.mmap:
        if self._map is None:
            raise Closed(f"metadata table {self._name} is closed")
        return self._map

    def write(self, spus: Iterable[SpuRow], partitions: Iterable[PartitionRow]) -> int:
        """Publish a new set of rows (see metadata_table.write_snapshot); returns the generation."""
        generation = write_snapshot(self._mapping(), spus, partitions, sc_pid=self._new_pid)
        self._new_pid = None
        return generation

    def snapshot(self) -> TableSnapshot:
        return read_snapshot(self._mapping())

    def close(self) -> None:
        """Unmap (idempotent). The object stays until :meth:`unlink`."""
        if self._map is not None:
            self._map.close()
            self._map = None

    def unlink(self) -> None:
        """Remove the object (idempotent: a later SC's object of the same name is never touched)."""
        if not self._unlinked:
            self._unlinked = True
            unlink_if_exists(self._name)

    def __enter__(self) -> "SharedTable":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
        self.unlink()

    def __repr__(self) -> str:
        state = "closed" if self._map is None else "open"
        return f"<SharedTable {self._name} {state}>"


class TableReader:
    """A client's read-only mapping of the table. Build with :meth:`open`."""

    def __init__(self, name: str, mapping: mmap.mmap, identity: tuple[int, int] = (-1, -1)) -> None:
        self._name = name
        self._map: mmap.mmap | None = mapping
        self._identity = identity          # (st_dev, st_ino) of the object mapped

    @classmethod
    def open(cls, name: str) -> "TableReader":
        """Map ``name`` read-only and check its header.

        Raises ClusterNotRunning (no such object, or not initialised yet),
        SharedMemoryRefused (foreign owner or unsafe mode), MetadataTableError or
        LayoutVersionMismatch (not a table this rillet reads).
        """
        shm, st = _open_sized(name, HEADER_SIZE, ClusterNotRunning, f"no metadata table {name}: is the cluster running?",
                              f"metadata table {name} is not initialised yet: is the cluster starting?")
        mapping = _map(shm, st.st_size, writable=False)
        try:
            if mapping[:HEADER_SIZE] == bytes(HEADER_SIZE):
                raise ClusterNotRunning(f"metadata table {name} is not initialised yet: is the cluster starting?")
            read_header(mapping)
        except BaseException:
            mapping.close()
            raise
        return cls(name, mapping, (st.st_dev, st.st_ino))

    @property
    def name(self) -> str:
        return self._name

    def _mapping(self) -> mmap.mmap:
        if self._map is None:
            raise Closed(f"metadata table reader for {self._name} is closed")
        return self._map

    def snapshot(self, *, max_retries: int = DEFAULT_MAX_RETRIES) -> TableSnapshot:
        return read_snapshot(self._mapping(), max_retries=max_retries)

    def is_current(self) -> bool:
        """Whether the name still names the object this reader maps: False once the SC
        unlinked it (cluster stopped) or another SC created a new one (restarted).
        One stat call; the mapping itself cannot tell, since an unlinked object stays
        mapped, frozen."""
        try:
            st = os.stat(_shm_path(self._name))
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._identity

    def sequence(self) -> int:
        """The table's seqlock word, one unlocked 8-byte read: the writer moves it on every
        write, so an even value equal to one read earlier means nothing changed in between
        (an odd one: a write is under way)."""
        return _U64_SEQ.unpack_from(self._mapping(), SEQ_OFFSET)[0]

    def generation(self, *, max_retries: int = DEFAULT_MAX_RETRIES) -> int:
        """The table's generation: one cheap read, to decide whether to re-read the snapshot."""
        return read_generation(self._mapping(), max_retries=max_retries)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None

    def __enter__(self) -> "TableReader":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._map is None else "open"
        return f"<TableReader {self._name} {state}>"


# --- raw mappings (the per-SPU positions tables, positions_shm.py) ------------------
#
# Mapped with libc's mmap rather than Python's: futexes need the mapping's address,
# and a read-only Python mmap cannot give one. A RawMapping is used by one owner
# that never touches it after close().

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_MAP_FAILED = ctypes.c_void_p(-1).value


class RawMapping:
    """``size`` bytes of ``fd`` mapped MAP_SHARED: ``buf`` (struct-compatible) and ``address``."""

    def __init__(self, fd: int, size: int, *, writable: bool, name: str) -> None:
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        address = _libc.mmap(None, size, prot, mmap.MAP_SHARED, fd, 0)
        if address in (None, _MAP_FAILED):
            err = ctypes.get_errno()
            raise MetadataTableError(f"cannot map shared-memory object {name}: {os.strerror(err)}")
        self.address: int = address
        self.size = size
        # A byte memoryview over the mapping: slices assign as fast as a bytearray's
        # (a ctypes array's own slice assignment costs ~2 us); read-only for readers.
        view = memoryview((ctypes.c_char * size).from_address(address)).cast("B")
        self.buf: memoryview | None = view if writable else view.toreadonly()

    def close(self) -> None:
        if self.buf is not None:
            self.buf.release()
            self.buf = None
            _libc.munmap(self.address, self.size)


def _mapped(shm: posix_ipc.SharedMemory, size: int, *, writable: bool) -> RawMapping:
    try:
        return RawMapping(shm.fd, size, writable=writable, name=shm.name)
    finally:
        shm.close_fd()


def create_raw(name: str, peek_pid, busy: str, size: int, init) -> RawMapping:
    """Create ``name`` exclusively (mode 0600; a stale object, whose writer ``peek_pid`` names
    a dead process, is replaced; a live one's is refused with ClusterAlreadyRunning(``busy``)),
    map it writable and ``init(mapping)``; nothing is left behind on failure."""
    return _create_initialised(name, peek_pid, busy, size, lambda shm, n: _mapped(shm, n, writable=True), init)


def open_raw(name: str, min_size: int, what: str) -> RawMapping:
    """Map an existing ``name`` read-only after the owner and mode checks (SharedMemoryRefused).
    MetadataTableError when it is missing or smaller than ``min_size`` (not initialised yet);
    ``what`` names the object in those messages."""
    shm, st = _open_sized(name, min_size, MetadataTableError, f"no {what} {name}", f"{what} {name} is not initialised yet")
    return _mapped(shm, st.st_size, writable=False)


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie is dead; another user's process counts as alive)."""
    return _process_alive(pid)


def shm_names(prefix: str) -> list[str]:
    """Names of the objects in /dev/shm whose name starts with ``prefix`` (for cleanup)."""
    base = prefix.lstrip("/")
    try:
        return ["/" + entry for entry in os.listdir("/dev/shm") if entry.startswith(base)]
    except OSError:
        return []
