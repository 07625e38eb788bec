"""Is a replica's storage still there? One cheap look at its files, no I/O beyond stat.

A replica's segments are mapped, so a deleted directory (``rm -rf``) or a segment unlinked
under a running SPU goes unnoticed by reads and appends: the maps keep the old inodes
alive. The data is then lost at the next restart, silently. The SPU looks once a second
(``SpuService.check_health``) and reports what it finds; a follower copy is then rebuilt
from the leader, a leader's copy makes the SC move leadership to a whole copy.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

HEALTH_CHECK_S = 1.0     # how often each replica's files are looked at (two stats per replica)


def _why(exc: OSError) -> str:
    return f"{exc.strerror or exc} ({errno.errorcode.get(exc.errno or 0, 'no errno')})"


def files_problem(directory: Path, active_segment: Path) -> str | None:
    """Why the replica stored in ``directory`` is no longer whole on disk, or None.

    Looks at the directory (gone, not a directory, not listable) and at the active segment
    file (gone); sealed segments are checked by content elsewhere (CRC scrub)."""
    try:
        st = os.stat(directory)
    except OSError as exc:
        return f"replica directory {directory} is gone: {_why(exc)}"
    if not stat.S_ISDIR(st.st_mode):
        return f"replica directory {directory} is no longer a directory"
    if not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
        return f"replica directory {directory} is not readable and writable by this SPU"
    try:
        os.stat(active_segment)
    except OSError as exc:
        return f"active segment {active_segment} is gone: {_why(exc)}"
    return None
