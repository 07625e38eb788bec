"""Admin calls for SmartModules (Fluvio's names), mixed into FluvioAdmin; and the spec types.

The SC stores each uploaded .wasm under its name (broker/sc/smartmodules.py) after checking that
it is a SmartModule; consumers fetch it by name when a stream opens.
"""

from __future__ import annotations

import time
from typing import Iterator

from rillet.ipc import messages as m
from rillet.ipc.errors import RilletError

WATCH_POLL_S = 0.2        # watch_smartmodule: how often the SC is asked for the list


def read_wasm(path: str) -> bytes:
    """The file's bytes; an unreadable file names the OS error as Fluvio prints it."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise RilletError(f"cannot read SmartModule file {path!r}: {exc.strerror} (os error {exc.errno})") from None


class SmartModuleSpec:
    """A module read from a .wasm file (Fluvio's ``SmartModuleSpec.new(path)``)."""

    def __init__(self, wasm: bytes) -> None:
        self.wasm = wasm

    @classmethod
    def new(cls, path: str) -> "SmartModuleSpec":
        return cls(read_wasm(path))


class MetadataSmartModuleSpec:
    """A stored module as listed: ``name()`` as Fluvio, plus size, transform, digest and time."""

    def __init__(self, info: m.SmartModuleInfo) -> None:
        self.info = info

    def name(self) -> str:
        return self.info.name

    def __getattr__(self, item):
        return getattr(self.info, item)

    def __repr__(self) -> str:
        return f"MetadataSmartModuleSpec({self.info.name!r}, {self.info.transform}, {self.info.size} bytes)"


class MessageMetadataSmartModuleSpec:
    """One change in a watch: a module stored (update) or deleted."""

    def __init__(self, module: MetadataSmartModuleSpec, *, deleted: bool) -> None:
        self._module = module
        self._deleted = deleted

    def is_update(self) -> bool:
        return not self._deleted

    def is_delete(self) -> bool:
        return self._deleted

    def metadata_smart_module_spec(self) -> MetadataSmartModuleSpec:
        return self._module


class MetaUpdateSmartModuleSpec:
    """One item of ``watch_smartmodule()``: every module, the changes, an epoch (1, 2, ...)."""

    def __init__(self, modules: list[MetadataSmartModuleSpec], changes: list[MessageMetadataSmartModuleSpec],
                 epoch: int) -> None:
        self._all, self._changes, self._epoch = modules, changes, epoch

    def all(self) -> list[MetadataSmartModuleSpec]:
        return list(self._all)

    def changes(self) -> list[MessageMetadataSmartModuleSpec]:
        return list(self._changes)

    def epoch(self) -> int:
        return self._epoch


def module_changes(before: dict[str, MetadataSmartModuleSpec],
                   after: dict[str, MetadataSmartModuleSpec]) -> list[MessageMetadataSmartModuleSpec]:
    """What changed between two listings (pure): stored or replaced ones, then deleted ones."""
    out = [MessageMetadataSmartModuleSpec(s, deleted=False) for name, s in after.items()
           if name not in before or before[name].info != s.info]
    out += [MessageMetadataSmartModuleSpec(s, deleted=True) for name, s in before.items() if name not in after]
    return out


class SmartModuleAdmin:
    """FluvioAdmin's SmartModule calls; needs the host's ``_call(make_request)``."""

    def create_smartmodule(self, name: str, path: str | SmartModuleSpec, dry_run: bool = False) -> None:
        """Store the .wasm at ``path`` (or a SmartModuleSpec) as ``name``. The SC refuses a file that
        is not a SmartModule (InvalidSmartModule) and a name already taken (SmartModuleAlreadyExists);
        ``dry_run`` checks without storing."""
        wasm = path.wasm if isinstance(path, SmartModuleSpec) else read_wasm(path)
        self._call(lambda cid: m.CreateSmartModule(cid, name, wasm, bool(dry_run)))

    def delete_smartmodule(self, name: str) -> None:
        """Delete a stored module; SmartModuleNotFound when there is none of that name. Streams
        already running with it keep it (they hold its bytes)."""
        self._call(lambda cid: m.DeleteSmartModule(cid, name))

    def list_smartmodules(self, filters: list[str] | None = None) -> list[MetadataSmartModuleSpec]:
        """The stored modules named in ``filters`` that exist (all for an empty list)."""
        reply = self._call(lambda cid: m.ListSmartModules(cid, list(filters or [])))
        return [MetadataSmartModuleSpec(i) for i in reply.modules]

    def watch_smartmodule(self, poll_interval_s: float = WATCH_POLL_S) -> Iterator[MetaUpdateSmartModuleSpec]:
        """A never-ending iterator, as Fluvio's: the first item's ``all()`` is every module now;
        each later one comes when a module was stored or deleted, ``changes()`` saying which."""
        previous: dict[str, MetadataSmartModuleSpec] | None = None
        epoch = 0
        while True:
            modules = self.list_smartmodules([])
            current = {s.name(): s for s in modules}
            changes = [] if previous is None else module_changes(previous, current)
            if previous is None or changes:
                epoch += 1
                yield MetaUpdateSmartModuleSpec(modules, changes, epoch)
            previous = current
            time.sleep(poll_interval_s)


__all__ = ["SmartModuleAdmin", "SmartModuleSpec", "MetadataSmartModuleSpec", "MetaUpdateSmartModuleSpec",
           "MessageMetadataSmartModuleSpec", "module_changes", "read_wasm"]
