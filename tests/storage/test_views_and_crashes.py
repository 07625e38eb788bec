"""Views held across close/roll/truncate, and real SIGKILLs of a writing process.

Checks that could end in SIGBUS run in a child process, so a regression fails the test
instead of killing the test run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from rillet.broker.storage import PartitionLog
from rillet.ipc.records import validate_batch

from .batches import sized_batch, split, stamped
from .conftest import LOGGER

SEG = 4096


def run_child(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=timeout)


def test_view_held_across_close_stays_readable(open_log, rng, tmp_path):
    log = open_log(segment_size=SEG)
    for _ in range(5):
        log.append(sized_batch(300, rng), leader_epoch=0)
    view = log.read(0, 1 << 20)
    before = bytes(view)
    log.close()  # must not raise although the map is still exported
    assert bytes(view) == before
    view.release()
    again = open_log(segment_size=SEG)
    assert again.recovery_report == [] and bytes(again.read(0, 1 << 20)) == before


def test_views_are_read_only(open_log, rng):
    log = open_log()
    log.append(sized_batch(100, rng), leader_epoch=0)
    view = log.read(0, 100)
    assert view.readonly
    with pytest.raises(TypeError):
        view[0] = 1


def test_view_held_across_rolls_and_truncation(open_log, rng):
    log = open_log(segment_size=SEG)
    first = [stamped(b, log.append(b, leader_epoch=0)[0], 0) for b in (sized_batch(900, rng) for _ in range(3))]
    view = log.read(0, 1 << 20)
    for _ in range(20):  # several rolls while the view pins the first segment's map
        log.append(sized_batch(900, rng), leader_epoch=0)
    assert log.segment_count > 3
    assert split(view) == first
    log.truncate_to(0)  # removes every later segment and empties the first one
    assert bytes(view).count(0) == len(view)  # now zeros, but readable
    log.append(sized_batch(200, rng), leader_epoch=1)
    log.close()
    assert len(bytes(view)) == len(b"".join(first))


def test_view_past_a_truncation_survives_close_without_sigbus(tmp_path):
    """close() must not trim the file under a live view (a read past EOF is SIGBUS)."""
    result = run_child("""
        import sys, random
        from rillet.broker.storage import PartitionLog
        from rillet.ipc.records import BatchBuilder
        log = PartitionLog.open(sys.argv[1], segment_size=1 << 20)
        b = BatchBuilder()
        b.append(None, bytes(range(256)) * 64, 0)
        batch = b.build()
        for _ in range(40):
            log.append(batch, leader_epoch=0)
        view = log.read(0, 1 << 30)
        log.truncate_to(1)
        log.close()
        print(len(view), sum(view[::4096]))
    """, str(tmp_path / "p0"))
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[0]) > 40 * 16000


def test_sigkill_mid_copy_leaves_a_cut_tail(tmp_path, caplog):
    """A writer killed with half a batch in the map: recovery keeps every whole batch."""
    d = tmp_path / "p0"
    result = run_child("""
        import os, signal, sys
        from rillet.broker.storage import PartitionLog
        from rillet.ipc.records import BatchBuilder, stamp_batch
        log = PartitionLog.open(sys.argv[1], segment_size=1 << 16)
        for i in range(50):
            b = BatchBuilder()
            for j in range(i % 5 + 1):
                b.append(b"k", b"value-%d-%d" % (i, j), 1000 + i)
            log.append(b.build(), leader_epoch=3)
        torn = bytearray(b.build())
        stamp_batch(torn, 0, log.leo, 3)
        seg = log._segments[-1]
        seg.buffer[seg.used:seg.used + 40] = torn[:40]   # killed mid-copy, header first
        print(log.leo, seg.used, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """, str(d))
    assert result.returncode == -signal.SIGKILL, result.stderr
    leo, used = map(int, result.stdout.split())
    log = PartitionLog.open(d, segment_size=1 << 16, logger=LOGGER)
    assert log.leo == leo
    [cut] = log.recovery_report
    assert cut.position == used and 0 < cut.bytes_cut <= 40
    assert cut.side_file.exists()
    batches = split(log.read(0, 1 << 30))
    assert [validate_batch(b).leader_epoch for b in batches] == [3] * 50
    log.close()


def test_sigkill_at_random_moments(tmp_path, rng):
    """Kill a busy writer repeatedly; every acknowledged offset survives, the log stays whole."""
    d = tmp_path / "p0"
    writer = textwrap.dedent("""
        import sys
        from rillet.broker.storage import PartitionLog
        from rillet.ipc.records import BatchBuilder
        log = PartitionLog.open(sys.argv[1], segment_size=1 << 16, index_interval_bytes=512)
        epoch = int(sys.argv[2])
        i = 0
        while True:
            b = BatchBuilder()
            for j in range(i % 7 + 1):
                b.append(None, b"x" * (i % 3000), j)
            base, leo = log.append(b.build(), leader_epoch=epoch)
            print(leo, flush=True)
            i += 1
    """)
    acked = 0
    for round_ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", writer, str(d), str(round_)], stdout=subprocess.PIPE,
                                text=True)
        try:
            for _ in range(rng.randrange(20, 400)):
                line = proc.stdout.readline()
                assert line, "writer exited early"
                acked = int(line)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
        log = PartitionLog.open(d, segment_size=1 << 16, index_interval_bytes=512, logger=LOGGER)
        assert log.leo >= acked, f"round {round_}: leo {log.leo} lost acknowledged offsets below {acked}"
        offset, epochs = 0, []
        while offset < log.leo:
            for batch in split(log.read(offset, 1 << 20)):
                header = validate_batch(batch)
                assert header.base_offset == offset
                epochs.append(header.leader_epoch)
                offset = header.next_offset
        assert epochs == sorted(epochs) and log.last_epoch == epochs[-1]
        acked = log.leo
        log.close()
