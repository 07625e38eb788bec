"""The RILLET_* environment switches and sizes a client reads: one parser, one error.

A value that is not understood is refused with InvalidArgument naming the variable and what it
takes, when the object that reads it is created (a stream, a producer), never half-way through
its work and never silently. Broker processes do not call these: a bad value there must not stop
an SPU, so they read their own with a logged fallback.
"""

from __future__ import annotations

import os

from .errors import InvalidArgument

_ON = ("1", "true", "yes", "on", "")
_OFF = ("0", "false", "no", "off")


def switch(name: str, default: bool = True, environ=os.environ) -> bool:
    """``name`` as on/off: 1/true/yes/on or 0/false/no/off (empty or unset: ``default``)."""
    value = environ.get(name)
    if value is None or not value.strip():
        return default
    value = value.strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise InvalidArgument(f"{name}={value!r}: use 0 or 1")


def byte_count(name: str, default: int, environ=os.environ) -> int:
    """``name`` as a number of bytes, 0 or more (unset or empty: ``default``)."""
    value = environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        count = int(value.strip())
    except ValueError:
        count = -1
    if count < 0:
        raise InvalidArgument(f"{name}={value!r}: use a number of bytes, 0 or more")
    return count
