"""Run a command with its stderr on a pseudo-terminal and collect what it drew there (for the
progress lines, which a command draws only when stderr is a terminal)."""

from __future__ import annotations

import os
import pty
import select
import subprocess


def stderr_on_a_terminal(argv: list[str], *, env=None, timeout_s: float = 60) -> tuple[int, bytes]:
    """The command's exit code and every byte it wrote to its terminal stderr."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=follower, env=env)
    os.close(follower)
    seen = b""
    try:
        while select.select([leader], [], [], timeout_s)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:         # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        return proc.wait(timeout_s), seen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
        os.close(leader)
