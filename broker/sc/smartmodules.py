"""The SC's SmartModule store: uploaded .wasm files kept by name, durably, in the SC's directory.

Layout: ``<sc dir>/smartmodules/<name>.wasm``, one file per module, written atomically (temp
file, fsync, rename, directory fsync: broker/storage/files.write_atomic), so a crash leaves the
old or the new file whole; the name, size, digest and time come from the file itself, so there
is no index to keep in step. A module is checked before it is stored (ipc/wasm.check_smartmodule:
WebAssembly, and it exports a SmartModule function); the SC never runs one (consumers do, see
client/_smartmodule_engine.py), so it needs no wasm runtime.

Files are small (a few hundred KB) and created rarely: handlers read and write in a worker
thread, so the SC's loop keeps serving SPUs meanwhile.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Callable

from rillet.ipc import messages as m
from rillet.ipc.errors import InvalidSmartModule, SmartModuleAlreadyExists, SmartModuleNotFound, StorageError
from rillet.ipc.names import validate_name
from rillet.ipc.wasm import WasmFormatError, check_smartmodule

from ..storage.files import fsync_directory, write_atomic

SUFFIX = ".wasm"


class SmartModuleStore:
    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self._lock = asyncio.Lock()          # creates and deletes one at a time, in arrival order

    def routes(self) -> dict[type, Callable]:
        """Admin message type -> handler, merged into the SC's routes."""
        return {
            m.CreateSmartModule: self._on_create,
            m.DeleteSmartModule: self._on_delete,
            m.ListSmartModules: self._on_list,
            m.GetSmartModule: self._on_get,
        }

    # --- synchronous core (also what tests call) ---
    def _path(self, name: str) -> Path | None:
        """The file of a module named ``name``; None for a name no module can have."""
        try:
            validate_name(name, "smartmodule")
        except Exception:
            return None
        return self.dir / f"{name}{SUFFIX}"

    def create(self, name: str, wasm: bytes, dry_run: bool = False) -> m.SmartModuleInfo:
        validate_name(name, "smartmodule")
        try:
            transform = check_smartmodule(wasm)
        except WasmFormatError as exc:
            raise InvalidSmartModule(f"smartmodule {name!r} refused: {exc}") from None
        path = self.dir / f"{name}{SUFFIX}"
        if path.exists():
            raise SmartModuleAlreadyExists(f"smartmodule {name!r} already exists (delete it first)")
        if not dry_run:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomic(path, wasm)
        return _info(name, wasm, transform, _mtime_ms(path) if not dry_run else 0)

    def delete(self, name: str) -> None:
        path = self._path(name)
        if path is None or not path.exists():
            raise SmartModuleNotFound.named(name)
        try:
            path.unlink()
            fsync_directory(self.dir)
        except OSError as exc:
            raise StorageError(f"cannot delete smartmodule {name!r} ({path}): {exc.strerror}") from exc

    def get(self, name: str) -> tuple[m.SmartModuleInfo, bytes]:
        path = self._path(name)
        try:
            wasm = path.read_bytes() if path is not None else None
        except FileNotFoundError:
            wasm = None
        except OSError as exc:
            raise StorageError(f"cannot read smartmodule {name!r} ({path}): {exc.strerror}") from exc
        if wasm is None:
            raise SmartModuleNotFound.named(name)
        return _info(name, wasm, _transform_of(wasm), _mtime_ms(path)), wasm

    def list(self, names: list[str]) -> list[m.SmartModuleInfo]:
        if names:
            wanted = list(dict.fromkeys(names))
        else:
            try:
                wanted = sorted(p.name[:-len(SUFFIX)] for p in self.dir.iterdir()
                                if p.name.endswith(SUFFIX) and not p.name.startswith("."))
            except FileNotFoundError:
                wanted = []
        out = []
        for name in wanted:
            try:
                out.append(self.get(name)[0])
            except SmartModuleNotFound:
                pass                    # Fluvio's list leaves out names that do not exist
        return out

    # --- handlers ---
    async def _on_create(self, msg: m.CreateSmartModule) -> m.Ok:
        async with self._lock:
            await asyncio.to_thread(self.create, msg.name, bytes(msg.wasm), msg.dry_run)
        return m.Ok(msg.cid)

    async def _on_delete(self, msg: m.DeleteSmartModule) -> m.Ok:
        async with self._lock:
            await asyncio.to_thread(self.delete, msg.name)
        return m.Ok(msg.cid)

    async def _on_list(self, msg: m.ListSmartModules) -> m.SmartModuleList:
        return m.SmartModuleList(msg.cid, await asyncio.to_thread(self.list, list(msg.names)))

    async def _on_get(self, msg: m.GetSmartModule) -> m.SmartModuleBody:
        info, wasm = await asyncio.to_thread(self.get, msg.name)
        return m.SmartModuleBody(msg.cid, info, wasm)


def _transform_of(wasm: bytes) -> str:
    try:
        return check_smartmodule(wasm)
    except WasmFormatError:
        return "unknown"                # stored by an older check; the consumer will say why


def _info(name: str, wasm: bytes, transform: str, created_ms: int) -> m.SmartModuleInfo:
    return m.SmartModuleInfo(name, len(wasm), transform, hashlib.sha256(wasm).hexdigest(), created_ms)


def _mtime_ms(path: Path) -> int:
    try:
        return int(os.stat(path).st_mtime * 1000)
    except OSError:
        return 0


__all__ = ["SmartModuleStore"]
