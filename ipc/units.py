"""Parsing of human durations and sizes ("100ms", "7d", "10 MiB"), as Fluvio's CLI takes them."""

from __future__ import annotations

import re

from .errors import InvalidArgument

_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0, "secs": 1.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "d": 86400.0, "day": 86400.0,
    "days": 86400.0, "w": 604800.0, "week": 604800.0, "weeks": 604800.0,
}
_SIZE_UNITS = {
    "": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000 ** 2, "mb": 1000 ** 2, "g": 1000 ** 3, "gb": 1000 ** 3,
    "t": 1000 ** 4, "tb": 1000 ** 4, "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4,
}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zµ]*)\s*", re.IGNORECASE)


def parse_duration(text: str | int | float, *, default_unit: str = "s") -> float:
    """Seconds in ``text``: "150ms", "1h 30m", "7d", or a bare number in ``default_unit``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text < 0:
            raise InvalidArgument(f"duration must not be negative, got {text}")
        return float(text) * _DURATION_UNITS[default_unit]
    s = str(text).strip().lower()
    if not s:
        raise InvalidArgument("empty duration")
    total, pos = 0.0, 0
    while pos < len(s):
        match = _PART.match(s, pos)
        if not match or match.end() == pos:
            raise InvalidArgument(f"invalid duration {text!r} (examples: 100ms, 30s, 1h, 7d)")
        number, unit = match.groups()
        unit = unit or default_unit
        if unit not in _DURATION_UNITS:
            raise InvalidArgument(f"invalid duration {text!r}: unknown unit {unit!r}")
        total += float(number) * _DURATION_UNITS[unit]
        pos = match.end()
    return total


def parse_size(text: str | int) -> int:
    """Bytes in ``text``: "16384", "16KiB", "10 MB" (KiB/MiB binary, KB/MB decimal)."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise InvalidArgument(f"size must not be negative, got {text}")
        return text
    s = str(text).strip().lower()
    match = _PART.fullmatch(s)
    if not match or match.group(2) not in _SIZE_UNITS:
        raise InvalidArgument(f"invalid size {text!r} (examples: 16384, 64KiB, 10MB)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
