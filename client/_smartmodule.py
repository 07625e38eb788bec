"""SmartModules on ``ConsumerConfig``: Fluvio's argument checks, not the modules themselves.

Running SmartModules (WebAssembly filters and maps applied by the SPU) is not built
yet. ``ConsumerConfig.smartmodule(...)`` still checks its arguments as Fluvio's
client does, with the same exception types and messages, so code written for Fluvio
fails the same way on bad input; a stream asked to apply a module raises
:data:`NOT_SUPPORTED` when it opens, instead of silently returning unfiltered records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from rillet.ipc.errors import InvalidArgument, RilletError


class SmartModuleKind(Enum):
    """The kind of a (legacy) SmartModule, as in Fluvio; optional for newer modules."""
    Filter = "filter"
    Map = "map"
    ArrayMap = "array_map"
    FilterMap = "filter_map"
    Aggregate = "aggregate"


NOT_SUPPORTED = "SmartModules are not supported yet: this consumer config asks for {what}"


@dataclass(frozen=True)
class SmartModuleInvocation:
    """One module attached to a ConsumerConfig: by registered name, or a .wasm file's bytes."""
    name: str | None
    path: str | None
    wasm: bytes | None
    kind: str | None
    params: dict[str, str] = field(default_factory=dict)
    aggregate: bytes | None = None

    def describe(self) -> str:
        return f"SmartModule {self.name!r}" if self.name is not None else f"SmartModule file {self.path!r}"


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


def refuse_smartmodules(invocations: list[SmartModuleInvocation]) -> None:
    """Raise the clear 'not supported' error when a stream is asked to apply modules."""
    if invocations:
        raise InvalidArgument(NOT_SUPPORTED.format(what=", ".join(i.describe() for i in invocations)))


__all__ = ["SmartModuleKind", "SmartModuleInvocation", "smartmodule_invocation", "refuse_smartmodules"]
