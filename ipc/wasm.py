"""What a WebAssembly module exports, read from its bytes (pure; no wasm runtime needed).

The SC checks an uploaded SmartModule with this before storing it, so a file that is not
WebAssembly, or a module that exports none of Fluvio's SmartModule functions, is refused at
``smartmodule create`` instead of failing every stream later; the SC needs no wasmtime.

Binary format (WebAssembly core spec 5.5): magic ``\\0asm``, version 1 (u32 little-endian),
then sections: id (1 byte), size (unsigned LEB128), contents. The export section (id 7) is a
vector (LEB128 count) of: name (LEB128 length, UTF-8), kind (1 byte: 0 func, 1 table,
2 memory, 3 global), index (LEB128).
"""

from __future__ import annotations

MAGIC = b"\x00asm"
VERSION_1 = b"\x01\x00\x00\x00"
EXPORT_SECTION = 7
KIND_NAMES = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}

# Fluvio's engine looks for these, in this order (fluvio-smartengine transforms/mod.rs).
TRANSFORM_EXPORTS = ("filter", "map", "filter_map", "array_map", "aggregate")
MAX_MODULE_BYTES = 32 << 20     # Fluvio's own modules are 50 KB to a few MB


class WasmFormatError(ValueError):
    """The bytes are not a WebAssembly module (or its export section is damaged)."""


def _leb_u32(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise WasmFormatError(f"truncated LEB128 number at byte {pos}")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise WasmFormatError(f"LEB128 number longer than 5 bytes at byte {pos}")


def exports(data: bytes) -> dict[str, str]:
    """Export name -> kind ("func", "memory", ...) of the module in ``data``."""
    if len(data) < 8 or data[:4] != MAGIC:
        raise WasmFormatError("not a WebAssembly module (no \\0asm magic at the start)")
    if data[4:8] != VERSION_1:
        raise WasmFormatError(f"unsupported WebAssembly version {data[4:8].hex()} (a component, or not core wasm 1)")
    pos, out = 8, {}
    while pos < len(data):
        section = data[pos]
        size, pos = _leb_u32(data, pos + 1)
        end = pos + size
        if end > len(data):
            raise WasmFormatError(f"section {section} of {size} bytes runs past the end of the file")
        if section == EXPORT_SECTION:
            count, p = _leb_u32(data, pos)
            for _ in range(count):
                length, p = _leb_u32(data, p)
                if p + length + 1 > end:
                    raise WasmFormatError("export name runs past its section")
                name = data[p:p + length].decode("utf-8", "replace")
                kind = data[p + length]
                _index, p = _leb_u32(data, p + length + 1)
                out[name] = KIND_NAMES.get(kind, f"kind {kind}")
        pos = end
    return out


def smartmodule_transform(names, kind: str | None = None) -> str | None:
    """The transform a module with exported ``names`` runs: ``kind``'s function when given and
    exported, else the first of TRANSFORM_EXPORTS it exports (Fluvio's order); None if none."""
    names = set(names)
    if kind is not None and kind in names:
        return kind
    return next((t for t in TRANSFORM_EXPORTS if t in names), None)


def check_smartmodule(data: bytes) -> str:
    """The transform of a SmartModule file; raises WasmFormatError saying why it is not one."""
    if len(data) > MAX_MODULE_BYTES:
        raise WasmFormatError(f"module of {len(data)} bytes exceeds the limit of {MAX_MODULE_BYTES} bytes")
    found = exports(data)
    funcs = {n for n, k in found.items() if k == "func"}
    transform = smartmodule_transform(funcs)
    if transform is None:
        raise WasmFormatError(f"not a SmartModule: it exports none of {', '.join(TRANSFORM_EXPORTS)} "
                              f"(exports: {', '.join(sorted(found)) or 'none'})")
    for needed, what in (("memory", "memory"), ("alloc", "func")):
        if found.get(needed) != what:
            raise WasmFormatError(f"not a SmartModule: it exports no {what} {needed!r}")
    return transform


__all__ = ["exports", "check_smartmodule", "smartmodule_transform", "WasmFormatError", "TRANSFORM_EXPORTS",
           "MAX_MODULE_BYTES"]
