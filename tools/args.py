"""Argument types and exit codes shared by the command modules of `rillet`.

An invalid value becomes argparse's one-line usage error (exit 2) naming the value.
"""

from __future__ import annotations

import argparse
import sys

from rillet.ipc.errors import InvalidArgument, RilletError
from rillet.ipc.names import validate_name
from rillet.ipc.units import parse_duration, parse_size

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


# --- argument types -------------------------------------------------------------------------

def non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def positive(text: str) -> int:
    value = non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1, got 0")
    return value


def size(text: str) -> int:
    try:
        return parse_size(text)
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def duration_s(text: str) -> float:
    try:
        return parse_duration(text)
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def duration_ms(text: str) -> int:
    # A bare number is milliseconds, as Fluvio's --linger takes it.
    try:
        return int(round(parse_duration(text, default_unit="ms") * 1000))
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def codec(text: str) -> str:
    from rillet.ipc.compression import parse_codec
    try:
        parse_codec(text)
    except RilletError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.lower()


def topic_codec(text: str) -> str:
    from rillet.ipc.compression import parse_topic_compression
    try:
        return parse_topic_compression(text)
    except RilletError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def name(text: str) -> str:
    try:
        return validate_name(text, "topic")
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# --- helpers -------------------------------------------------------------------------------------

def say(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)
