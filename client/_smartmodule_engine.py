"""Runs Fluvio SmartModules (WebAssembly) on wasmtime, each call bounded in fuel and memory.

The shell around the pure codec (_smartmodule_codec): it compiles a module once per process
(cached by content), instantiates it in a Store of its own with a memory limit, links the one
import Fluvio modules have (``env.copy_records``, which hands the output back), calls ``init``
with the params when the module has one, and then the transform (``filter``, ``map``,
``filter_map``, ``array_map`` or ``aggregate``) once per chunk of records.

Bounds, per call: the store gets ``fuel`` units before each call (about one per wasm
instruction), so a loop ends in a trap instead of never returning; memory grows at most to
``memory_bytes`` (a failed ``memory.grow`` makes Rust's allocator abort, which traps). A trap,
a negative status or an error the module returns ends the stream: :class:`SmartModuleError`
names the module and the source offset. A chunk that traps is replayed record by record on a
fresh instance, so the records before the bad one are still delivered and the error names its
exact offset (the aggregate accumulator is restored to what it was before the chunk).

wasmtime is a dependency of rillet (SmartModules work from a plain install, as in Fluvio), but it
is imported on first use only: processes that apply no module (the broker, most consumers) never
load it. Calls into wasm release the GIL (ctypes), so other threads keep running meanwhile.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import threading
from dataclasses import dataclass

from rillet.ipc.errors import InvalidSmartModule, SmartModuleError
from rillet.ipc.wasm import TRANSFORM_EXPORTS, smartmodule_transform

from . import _smartmodule_codec as codec

DEFAULT_FUEL = 1_000_000_000          # per call (a chunk of <= 1024 records): the map module spends ~24k a 100 B record
DEFAULT_MEMORY_BYTES = 256 << 20      # per module instance; Fluvio's SPU allows 1 GB, a client less
# wasmtime is in rillet's dependencies: missing, the install is broken (or made with --no-deps)
INSTALL_HINT = "SmartModules need wasmtime, a dependency of rillet missing from this environment: pip install 'wasmtime>=20'"


def _wasmtime():
    try:
        import wasmtime
    except ImportError:
        raise InvalidSmartModule(INSTALL_HINT) from None
    return wasmtime


@dataclass(frozen=True)
class Limits:
    """Bounds of one module call. Defaults from $RILLET_SMARTMODULE_FUEL and
    $RILLET_SMARTMODULE_MEMORY (bytes), read when a stream opens."""
    fuel: int = DEFAULT_FUEL
    memory_bytes: int = DEFAULT_MEMORY_BYTES

    @classmethod
    def from_env(cls) -> "Limits":
        def read(var: str, default: int) -> int:
            text = os.environ.get(var)
            if not text:
                return default
            try:
                value = int(text)
            except ValueError:
                raise InvalidSmartModule(f"${var} must be a positive integer, got {text!r}") from None
            if value <= 0:
                raise InvalidSmartModule(f"${var} must be a positive integer, got {text!r}")
            return value
        return cls(read("RILLET_SMARTMODULE_FUEL", DEFAULT_FUEL), read("RILLET_SMARTMODULE_MEMORY", DEFAULT_MEMORY_BYTES))


_engine = None
_modules: dict[bytes, object] = {}
_lock = threading.Lock()


@atexit.register
def _release_modules() -> None:
    """Free the cached modules while wasmtime can still do it: left to interpreter shutdown, their
    finalizers run after wasmtime's own globals are gone and print a TypeError each."""
    with _lock:
        for module in _modules.values():
            module.close()
        _modules.clear()


def compile_module(wasm: bytes, label: str):
    """The compiled wasmtime Module for ``wasm`` (cached per process by content)."""
    global _engine
    wasmtime = _wasmtime()
    digest = hashlib.sha256(wasm).digest()
    with _lock:
        if _engine is None:
            config = wasmtime.Config()
            config.consume_fuel = True
            _engine = wasmtime.Engine(config)
        module = _modules.get(digest)
        if module is None:
            try:
                module = wasmtime.Module(_engine, wasm)
            except wasmtime.WasmtimeError as exc:
                raise InvalidSmartModule(f"{label} is not a valid WebAssembly module: {_first_line(exc)}") from None
            _modules[digest] = module
    return module


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _cause_line(exc: BaseException) -> str:
    """A trap's message is a backtrace, then "Caused by:" and the cause: the cause is what says it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


class _Trapped(Exception):
    """A call into the module trapped (or failed in the host); carries the readable cause."""


class ModuleInstance:
    """One module in a Store of its own: ``init`` done, ready for ``call``."""

    def __init__(self, label: str, wasm: bytes, kind: str | None, params: dict[str, str], limits: Limits) -> None:
        wasmtime = _wasmtime()
        self.label = label
        self.limits = limits
        module = compile_module(wasm, label)
        exports = {e.name for e in module.exports}
        self.transform = smartmodule_transform(exports, kind)
        if self.transform is None:
            raise InvalidSmartModule(
                f"{label} is not a SmartModule: it exports none of {', '.join(TRANSFORM_EXPORTS)}")
        for needed in ("memory", "alloc"):
            if needed not in exports:
                raise InvalidSmartModule(f"{label} is not a SmartModule: it exports no {needed!r}")
        self.store = wasmtime.Store(_engine)
        self.store.set_limits(memory_size=limits.memory_bytes)
        linker = wasmtime.Linker(_engine)
        self._output: bytes | None = None
        i32 = wasmtime.ValType.i32()
        for imp in module.imports:
            if imp.name == "copy_records":
                linker.define_func(imp.module, imp.name, wasmtime.FuncType([i32, i32], []), self._copy_records,
                                   access_caller=True)
        if any(imp.module.startswith("wasi_") for imp in module.imports):
            # Modules built for wasm32-wasi (Fluvio's engine links WASI too). A module's prints go
            # to stderr: a consumer's stdout is its records.
            wasi = wasmtime.WasiConfig()
            wasi.inherit_stderr()
            self.store.set_wasi(wasi)
            linker.define_wasi()
        try:
            instance = linker.instantiate(self.store, module)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            raise InvalidSmartModule(f"{label} cannot be instantiated: {_first_line(exc)}") from None
        ex = instance.exports(self.store)
        self._memory, self._alloc, self._fn = ex["memory"], ex["alloc"], ex[self.transform]
        self._init = ex["init"] if "init" in exports else None
        self._wasmtime = wasmtime
        if self._init is not None:
            self._run_init(params)

    def _copy_records(self, caller, ptr: int, length: int) -> None:
        # Copied at once: the module may free or reuse the buffer after the call returns. A bad
        # range raises here, which wasmtime turns into a trap of the call.
        if ptr < 0 or length < 0 or ptr + length > self._memory.data_len(caller):
            raise ValueError(f"copy_records({ptr}, {length}) is outside the module's memory")
        self._output = bytes(self._memory.read(caller, ptr, ptr + length))

    def _run_init(self, params: dict[str, str]) -> None:
        try:
            status = self._invoke(self._init, codec.encode_params(params))
        except _Trapped as exc:
            raise SmartModuleError(f"{self.label} failed in init: {exc}") from None
        if status == codec.INIT_ERROR:
            hint = codec.decode_init_output(self._output or b"")
            raise SmartModuleError(f"{self.label} refused its params: {hint.strip()}")
        if status < 0:
            raise SmartModuleError(f"{self.label} failed in init: {codec.init_status(status)}")

    def _invoke(self, fn, payload: bytes) -> int:
        """Copy ``payload`` into the module, call ``fn(ptr, len, version)`` with a fresh fuel budget."""
        wasmtime = self._wasmtime
        store = self.store
        self._output = None
        try:
            store.set_fuel(self.limits.fuel)
            ptr = self._alloc(store, len(payload))
            if not isinstance(ptr, int) or ptr < 0 or ptr + len(payload) > self._memory.data_len(store):
                raise _Trapped(f"its alloc({len(payload)}) returned {ptr!r}, outside its memory")
            self._memory.write(store, payload, ptr)
            return fn(store, ptr, len(payload), codec.VERSION)
        except wasmtime.Trap as exc:
            raise _Trapped(self._trap_cause(exc)) from None
        except wasmtime.WasmtimeError as exc:
            raise _Trapped(_cause_line(exc)) from None

    def _trap_cause(self, exc) -> str:
        code = getattr(exc, "trap_code", None)
        wasmtime = self._wasmtime
        if code == wasmtime.TrapCode.OUT_OF_FUEL:
            return f"it used up its fuel ({self.limits.fuel:,} units for one call: a loop that does not end?)"
        # wasmtime-py has no hook on a refused memory.grow: the module sees -1 and (Rust) aborts
        # with a trap. A trap while a grow as large as its memory would pass the limit is taken
        # as that (allocators grow by up to the size they have).
        size = self._memory.data_len(self.store)
        if 2 * size + 65536 > self.limits.memory_bytes:
            return (f"it ran out of memory (the limit is {self.limits.memory_bytes:,} bytes, it had {size:,}; "
                    f"{_cause_line(exc)})")
        return f"it trapped: {_cause_line(exc)}"

    def call(self, payload: bytes) -> bytes:
        """Run the transform on an encoded input; the encoded output (b"" if it gave none)."""
        status = self._invoke(self._fn, payload)
        if status < 0:
            raise _Trapped(codec.transform_status(status))
        return self._output or b""


@dataclass
class ModuleSpec:
    """What a chain needs to (re)build one module: its label for messages, bytes, kind, params,
    and the aggregate's initial accumulator."""
    label: str
    wasm: bytes
    kind: str | None
    params: dict[str, str]
    accumulator: bytes = b""


class SmartModuleChain:
    """The modules of one stream, applied in order; ``process`` maps source records to output.

    Pure in the sense that matters here: it knows nothing of streams or sockets; it takes and
    gives :class:`codec.SmRecord` lists with offsets relative to ``base_offset``.
    """

    def __init__(self, specs: list[ModuleSpec], limits: Limits | None = None) -> None:
        self.specs = specs
        self.limits = limits or Limits.from_env()
        self.accumulators = [s.accumulator for s in specs]
        self.instances = [self._instantiate(s) for s in specs]

    def _instantiate(self, spec: ModuleSpec) -> ModuleInstance:
        return ModuleInstance(spec.label, spec.wasm, spec.kind, spec.params, self.limits)

    def process(self, records: list[codec.SmRecord], base_offset: int, base_timestamp: int) -> list[codec.SmRecord]:
        """Output records of the chain for ``records``. On a failure, the output of the records
        before the failing one is attached to the raised SmartModuleError as ``.delivered``."""
        saved = list(self.accumulators)
        try:
            return self._run(records, base_offset, base_timestamp)
        except _Failed as failed:
            if len(records) == 1 or failed.exact:
                raise self._error(failed, base_offset, records, []) from None
        # Replay one record at a time on fresh instances, to deliver what came before the bad
        # record and name its offset.
        self.accumulators = saved
        self.instances = [self._instantiate(s) for s in self.specs]
        delivered: list[codec.SmRecord] = []
        for record in records:
            try:
                delivered += self._run([record], base_offset, base_timestamp)
            except _Failed as failed:
                raise self._error(failed, base_offset, [record], delivered) from None
        return delivered

    def _run(self, records: list[codec.SmRecord], base_offset: int, base_timestamp: int) -> list[codec.SmRecord]:
        for i, instance in enumerate(self.instances):
            payload = codec.encode_input(codec.encode_records(records), base_offset, base_timestamp)
            aggregate = instance.transform == "aggregate"
            if aggregate:
                payload = codec.encode_aggregate_input(payload, self.accumulators[i])
            try:
                out = instance.call(payload)
                if aggregate:
                    records, error, self.accumulators[i] = codec.decode_aggregate_output(out)
                else:
                    records, error = codec.decode_output(out)
            except _Trapped as exc:
                raise _Failed(instance.label, str(exc), None, exact=False) from None
            except codec.OutputError as exc:
                raise _Failed(instance.label, f"its output does not decode: {exc}", None, exact=False) from None
            if error is not None:        # the successes before it count only if nothing follows
                last = i == len(self.instances) - 1
                raise _Failed(instance.label, error.hint.strip(), error, exact=True, before=records if last else [])
        return records

    def _error(self, failed: "_Failed", base_offset: int, records: list[codec.SmRecord],
               delivered: list[codec.SmRecord]) -> SmartModuleError:
        if failed.info is not None:
            offset = failed.info.offset
            where = f"at offset {offset}"
            delivered = delivered + failed.before
        elif len(records) == 1:
            offset = base_offset + records[0].offset_delta
            where = f"at offset {offset}"
        else:                       # cannot happen: a multi-record failure is replayed
            offset = base_offset + records[0].offset_delta
            where = f"at offsets {offset} to {base_offset + records[-1].offset_delta}"
        error = SmartModuleError(f"{failed.label} failed {where}: {failed.cause}")
        error.offset = offset
        error.delivered = delivered
        return error


class _Failed(Exception):
    def __init__(self, label: str, cause: str, info: codec.RuntimeErrorInfo | None, *, exact: bool,
                 before: list[codec.SmRecord] | None = None) -> None:
        super().__init__(cause)
        self.label, self.cause, self.info, self.exact = label, cause, info, exact
        self.before = before or []


__all__ = ["Limits", "ModuleSpec", "SmartModuleChain", "ModuleInstance", "compile_module", "INSTALL_HINT"]
