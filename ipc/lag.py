"""Consumer lag: the one definition every view of it uses (CLI, Python API, metrics).

A named consumer stores the last offset it has *seen* (Fluvio's rule: it resumes at
offset + 1), so the records it has not seen yet below the high watermark are
``hw - (offset + 1)``. Records past the HW are not counted: a COMMITTED reader cannot
see them yet, and an UNCOMMITTED one may see them before they count. Never below 0: a
consumer may have seen records of an old leader that a new one truncated away, or the
HW it is compared with may be a report older than its commit.
"""

from __future__ import annotations


def consumer_lag(hw: int, offset: int) -> int | None:
    """Records below ``hw`` after the last seen ``offset``; None when the HW is unknown (< 0)."""
    if hw < 0:
        return None
    return max(0, hw - (offset + 1))
