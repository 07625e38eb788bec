"""Connector types by name: the ``@sink`` / ``@source`` decorators and the loading of user modules.

A type is registered under the name its YAML gives as ``meta.type``. The built-in
http-sink and http-source register here the same way (client/connectors/_http.py), so
the runtime (``_runtime.py``) knows nothing about HTTP.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path

from rillet.ipc.errors import ConnectorConfigError


@dataclass(frozen=True)
class ConnectorType:
    name: str
    direction: str              # "sink" or "source"
    target: object              # a function / coroutine function / generator function, or a class
    batch: bool = False         # a sink called with a list of records per fetch instead of one record
    section: str | None = None  # the YAML key of its settings (default: the type's name)

    @property
    def is_class(self) -> bool:
        return inspect.isclass(self.target)


_TYPES: dict[str, ConnectorType] = {}


def _register(kind: ConnectorType):
    old = _TYPES.get(kind.name)
    if old is not None and old.target is not kind.target and getattr(old.target, "__qualname__", None) != getattr(
            kind.target, "__qualname__", None):
        raise ValueError(f"connector type {kind.name!r} is already registered by {old.target!r}")
    _TYPES[kind.name] = kind
    return kind.target


def sink(name: str, *, batch: bool = False, section: str | None = None):
    """Register a sink under ``meta.type: name``.

    The target is either a function (or ``async def``) called as ``fn(record, ctx)`` for each
    record (``fn(records, ctx)`` with the records of one fetch when ``batch=True``), or a
    class made once as ``cls(ctx)`` whose instances are called the same way without ``ctx``
    and may have ``close()``. A record's offset is committed only once the call for it has
    returned; an exception stops the connector (it is restarted and the record sent again).
    """
    def register(target):
        return _register(ConnectorType(name, "sink", target, batch, section))
    return register


def source(name: str, *, section: str | None = None):
    """Register a source under ``meta.type: name``.

    The target is a generator function (or ``async def`` generator) called as ``fn(ctx)``,
    or a class made as ``cls(ctx)`` that is iterable (``__iter__`` or ``__aiter__``). Each
    item it yields is one record: a value (``bytes`` or ``str``) or a ``(key, value)`` pair.
    """
    def register(target):
        return _register(ConnectorType(name, "source", target, False, section))
    return register


def registered(name: str) -> ConnectorType | None:
    return _TYPES.get(name)


def known_types() -> dict[str, tuple[str, str]]:
    """type -> (direction, section) of every registered type (for parse_config)."""
    return {t.name: (t.direction, t.section or t.name) for t in _TYPES.values()}


def load_builtins() -> None:
    from . import _http  # noqa: F401  (registers http-sink and http-source)


def load_module(module: str, base_dir: str | Path | None = None) -> None:
    """Import ``module``: a ``.py`` file (relative to ``base_dir``) or a dotted module name.
    Its ``@sink`` / ``@source`` decorators register its types. Errors name ``python.module``."""
    try:
        if module.endswith(".py") or "/" in module:
            path = Path(module)
            if not path.is_absolute() and base_dir is not None:
                path = Path(base_dir) / path
            if not path.is_file():
                raise ConnectorConfigError(f"python.module: no such file {str(path)!r}")
            mod_name = f"rillet_user_connector_{abs(hash(str(path.resolve())))}"
            if mod_name in sys.modules:
                return
            spec = importlib.util.spec_from_file_location(mod_name, path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = mod
            try:
                spec.loader.exec_module(mod)
            except BaseException:
                sys.modules.pop(mod_name, None)
                raise
        else:
            importlib.import_module(module)
    except ConnectorConfigError:
        raise
    except Exception as exc:
        raise ConnectorConfigError(f"python.module: importing {module!r} failed: {type(exc).__name__}: {exc}") from exc
