"""The scrub finds a flipped byte in a sealed segment and names the offsets it damaged."""

from __future__ import annotations

from rillet.broker.storage.scrub import Scrubber
from rillet.ipc.records import HEADER_SIZE

from .batches import sized_batch


def fill(log, rng, batches: int, *, records: int = 3) -> None:
    for _ in range(batches):
        log.append(sized_batch(rng.randrange(HEADER_SIZE + 8, 300), rng, record_count=records), leader_epoch=1)


def scrub_all(scrubber: Scrubber, max_bytes: int) -> list:
    found, done = [], False
    while not done:
        done, damage = scrubber.step(max_bytes)
        found += damage
    return found


def test_a_whole_log_scrubs_clean_in_slices(open_log, rng):
    log = open_log(segment_size=4096)
    fill(log, rng, 200)
    assert len(log.sealed()) >= 5
    scrubber = Scrubber(log)
    assert scrub_all(scrubber, 500) == []
    assert scrubber.passes == 1
    assert scrubber.checked_bytes == sum(s.used for s in log.sealed())
    assert scrub_all(scrubber, 1 << 20) == [] and scrubber.passes == 2      # the next pass starts over


def test_a_flipped_byte_in_a_sealed_segment_is_found_with_its_offsets(open_log, rng):
    log = open_log(segment_size=4096)
    fill(log, rng, 200)
    seg = log.sealed()[2]
    spans = list(seg.spans())
    pos, base, size, _epoch, next_offset = spans[len(spans) // 2]
    flip_at = pos + HEADER_SIZE + rng.randrange(size - HEADER_SIZE)     # in the records block
    with open(seg.log_path, "r+b") as f:                                 # as a failing disk would
        f.seek(flip_at)
        byte = f.read(1)[0]
        f.seek(flip_at)
        f.write(bytes([byte ^ (1 << rng.randrange(8))]))
    found = scrub_all(Scrubber(log), 700)
    assert len(found) == 1, found
    damage = found[0]
    assert (damage.segment, damage.position) == (str(seg.log_path), pos)
    assert (damage.first_offset, damage.last_offset) == (base, next_offset - 1)
    assert "CRC mismatch" in damage.cause and f"offsets {base} to {next_offset - 1}" in damage.describe()


def test_segments_deleted_mid_pass_are_skipped(open_log, rng):
    log = open_log(segment_size=4096)
    fill(log, rng, 200)
    scrubber = Scrubber(log)
    scrubber.step(100)
    log.delete_oldest_segments(3)
    assert scrub_all(scrubber, 300) == [] and scrubber.passes == 1


def test_a_damaged_header_inside_a_sealed_segment_loses_the_rest_of_it(open_log, rng):
    log = open_log(segment_size=4096)
    fill(log, rng, 200)
    seg = log.sealed()[1]
    spans = list(seg.spans())
    pos, base, _size, _epoch, _next = spans[len(spans) // 2]
    with open(seg.log_path, "r+b") as f:          # the magic byte: outside the CRC
        f.seek(pos + 16)
        f.write(b"\x07")
    found = scrub_all(Scrubber(log), 1 << 20)
    assert [(d.position, d.first_offset, d.last_offset) for d in found] == [(pos, base, seg.next_offset - 1)]
    assert "header at position" in found[0].cause


def test_segments_sealed_after_a_pass_are_caught_up_alone(open_log, rng):
    """Issue 10 gap d: a segment sealed between passes is checked from where the pass ended."""
    log = open_log(segment_size=4096)
    fill(log, rng, 100)
    scrubber = Scrubber(log)
    scrub_all(scrubber, 1 << 20)
    assert not scrubber.unchecked()
    checked = scrubber.checked_bytes
    sealed_before = len(log.sealed())
    fill(log, rng, 100)
    new = log.sealed()[sealed_before:]
    assert new and scrubber.unchecked()
    seg = new[0]
    pos, _base, size, _epoch, _next = list(seg.spans())[0]
    with open(seg.log_path, "r+b") as f:
        f.seek(pos + size - 1)
        byte = f.read(1)[0]
        f.seek(pos + size - 1)
        f.write(bytes([byte ^ 1]))
    scrubber.catch_up()
    found = scrub_all(scrubber, 1 << 20)
    assert [d.segment for d in found] == [str(seg.log_path)]
    assert scrubber.checked_bytes - checked == sum(s.used for s in new), "only the new segments"
    assert not scrubber.unchecked() and not scrubber.catching_up


def test_a_truncation_below_the_checked_mark_makes_new_segments_unchecked(open_log, rng):
    log = open_log(segment_size=4096)
    fill(log, rng, 100)
    scrubber = Scrubber(log)
    scrub_all(scrubber, 1 << 20)
    cut = log.sealed()[1].base_offset
    log.truncate_to(cut)
    scrubber.truncated(cut)                     # as Replica.truncate_to tells it
    fill(log, rng, 60)
    assert scrubber.unchecked()
