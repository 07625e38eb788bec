"""SmartModules on a consumer's stream: Fluvio's argument checks, name resolution, and the
per-partition transform a stream applies to the records it decoded.

Where modules run: in the consumer's process, on the records it read (by socket or directly
from the leader's files), never in the SPU. The SPU then runs no user code (a module that
loops or allocates costs only its own consumer), the direct-read path keeps working, and a
stream's results and offsets are the same either way. ``ConsumerConfig.smartmodule(...)``
checks its arguments as Fluvio's client does (same exception types and messages). Modules
named by ``name`` are fetched from the SC when the stream opens (SmartModuleNotFound:
"SmartModule NAME was not found"); each partition stream gets its own instances, so an
aggregate's accumulator is per partition, as in Fluvio (one chain per partition stream).

Offsets stay the source offsets: a module's output record carries its source record's offset
(filtered records leave gaps; an array_map's outputs all carry their source's offset; one
call per source record for array_map, so that holds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from rillet.ipc.errors import InvalidArgument, RilletError, SmartModuleError


class SmartModuleKind(Enum):
    """The kind of a (legacy) SmartModule, as in Fluvio; optional for newer modules."""
    Filter = "filter"
    Map = "map"
    ArrayMap = "array_map"
    FilterMap = "filter_map"
    Aggregate = "aggregate"


CHUNK_RECORDS = 1024      # records per module call: bounds the fuel and memory one call needs


@dataclass(frozen=True)
class SmartModuleInvocation:
    """One module attached to a ConsumerConfig: by registered name, or a .wasm file's bytes."""
    name: str | None
    path: str | None
    wasm: bytes | None
    kind: str | None
    params: dict[str, str] = field(default_factory=dict)
    aggregate: bytes | None = None


def smartmodule_invocation(name=None, path=None, kind=None, params=None, aggregate=None) -> SmartModuleInvocation:
    """Check the arguments in Fluvio's order, with its messages and exception types:
    ``kind`` must be a SmartModuleKind (anything else fails on ``.value``, AttributeError),
    exactly one of ``name``/``path`` (plain Exception), and a ``path`` is read at once
    (an unreadable file names the OS error as Rust prints it: "... (os error 2)")."""
    if kind is not None:
        kind = kind.value            # a str raises AttributeError: "'str' object has no attribute 'value'"
    if path is None and name is None:
        raise Exception("Require either a path or a name for a smartmodule.")
    if path is not None and name is not None:
        raise Exception("Only specify one of path or name not both.")
    params = {} if params is None else dict(params)
    for k, v in params.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidArgument(f"SmartModule params must map str to str, got {k!r}: {v!r}")
    wasm = None
    if path is not None:
        try:
            with open(path, "rb") as f:
                wasm = f.read()
        except OSError as exc:
            raise RilletError(f"cannot read SmartModule file {path!r}: {exc.strerror} (os error {exc.errno})") from None
    initial = None if aggregate is None else bytes(aggregate)
    return SmartModuleInvocation(name, path, wasm, kind, params, initial)


def resolve_modules(paths, invocations: list[SmartModuleInvocation]) -> list:
    """ModuleSpecs for a stream: file modules as read, named ones fetched from the SC
    (SmartModuleNotFound when missing). [] when there are none (nothing is imported then)."""
    if not invocations:
        return []
    # imported here: a consumer without modules never loads the engine, the codec or wasmtime
    from rillet.ipc.admin_link import admin_connection
    from rillet.ipc.messages import GetSmartModule

    from ._smartmodule_engine import ModuleSpec, compile_module
    specs = []
    conn = None
    try:
        for inv in invocations:
            if inv.wasm is not None:
                label, wasm = f"SmartModule file {inv.path!r}", inv.wasm
            else:
                if conn is None:
                    conn = admin_connection(paths)
                body = conn.call(GetSmartModule(conn.next_cid(), inv.name))
                label, wasm = f"SmartModule {inv.name!r}", bytes(body.wasm)
            compile_module(wasm, label)          # a bad file fails here, once, not per partition
            specs.append(ModuleSpec(label, wasm, inv.kind, inv.params,
                                    b"" if inv.aggregate is None else inv.aggregate))
    finally:
        if conn is not None:
            conn.close()
    return specs


class RecordTransform:
    """A partition stream's modules: ``apply(records)`` gives the records to hand out.

    A module failure does not raise here: ``apply`` returns the records before the failing one
    with the SmartModuleError, which the stream raises once they are handed out.
    """

    def __init__(self, specs: list, partition: int, record_type) -> None:
        from ._smartmodule_codec import SmRecord
        from ._smartmodule_engine import SmartModuleChain
        self._sm_record = SmRecord
        self.chain = SmartModuleChain(specs)
        self.partition = partition
        self.record_type = record_type
        self.per_record = any(i.transform == "array_map" for i in self.chain.instances)

    def apply(self, records: list) -> tuple[list, SmartModuleError | None]:
        out: list = []
        step = 1 if self.per_record else CHUNK_RECORDS
        i = 0
        while i < len(records):
            chunk = _same_batch(records, i, step)
            try:
                self._run(chunk, out)
            except SmartModuleError as error:
                self._emit(chunk, error.delivered, out)
                return out, error
            i += len(chunk)
        return out, None

    def _run(self, chunk: list, out: list) -> None:
        base_offset, base_ts = chunk[0]._offset, chunk[0]._batch[1]
        SmRecord = self._sm_record
        sm = [SmRecord(r._offset - base_offset, r._batch[1] + r._timestamp_delta - base_ts, r._key, r._value)
              for r in chunk]
        self._emit(chunk, self.chain.process(sm, base_offset, base_ts), out)

    def _emit(self, chunk: list, results: list, out: list) -> None:
        """Records for the module's output: a source record unchanged is handed out as it is
        (headers and all); others are new records at their source's offset."""
        if not results:
            return
        base_offset, base_ts = chunk[0]._offset, chunk[0]._batch[1]
        shared = (self.partition, base_ts)
        make = self.record_type
        for res in results:
            d = res.offset_delta
            src = chunk[d] if 0 <= d < len(chunk) else None
            if src is not None and src._value == res.value and src._key == res.key:
                out.append(src)
                continue
            record = make(_timestamp_delta=res.timestamp_delta, _key=res.key, _value=res.value,
                          _headers=src._headers if src is not None else None)
            record._offset = base_offset + d
            record._batch = shared
            out.append(record)


def _same_batch(records: list, start: int, limit: int) -> list:
    """Up to ``limit`` records from ``start`` that share one batch (one base timestamp)."""
    batch = records[start]._batch
    end = start + 1
    stop = min(len(records), start + limit)
    while end < stop and records[end]._batch is batch:
        end += 1
    return records[start:end]


__all__ = ["SmartModuleKind", "SmartModuleInvocation", "smartmodule_invocation", "resolve_modules",
           "RecordTransform", "CHUNK_RECORDS"]
