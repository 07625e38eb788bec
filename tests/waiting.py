"""One poll-until-true for the integration tests (five modules each had their own copy)."""

from __future__ import annotations

import time


def wait_for(predicate, timeout: float = 20.0, what: str = "condition", poll: float = 0.02):
    """Call ``predicate`` every ``poll`` seconds until it returns something truthy, and return
    that; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")
