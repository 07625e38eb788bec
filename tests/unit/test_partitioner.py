"""The partitioner: SipHash-2-4 reference vectors and a pinned key -> partition table.

The table pins Fluvio's rule (zero key, 8-byte little-endian length, then the key
bytes, modulo the partition count). Its expected values came from Rust's
``std::hash::SipHasher::new()`` hashing a ``&[u8]`` (what Fluvio's partitioner
does with the siphasher crate), so a change of the rule breaks this test.
"""

from __future__ import annotations

import pytest

from rillet._partitioner import Partitioner, key_hash, siphash24

# The SipHash paper's test vectors (reference implementation's vectors.h): key
# 00 01 .. 0f, message 00 01 .. (n-1) for n = 0..63, SipHash-2-4, 64-bit output.
PAPER_K0, PAPER_K1 = 0x0706050403020100, 0x0F0E0D0C0B0A0908
PAPER_VECTORS = [
    0x726fdb47dd0e0e31, 0x74f839c593dc67fd, 0x0d6c8009d9a94f5a, 0x85676696d7fb7e2d,
    0xcf2794e0277187b7, 0x18765564cd99a68d, 0xcbc9466e58fee3ce, 0xab0200f58b01d137,
    0x93f5f5799a932462, 0x9e0082df0ba9e4b0, 0x7a5dbbc594ddb9f3, 0xf4b32f46226bada7,
    0x751e8fbc860ee5fb, 0x14ea5627c0843d90, 0xf723ca908e7af2ee, 0xa129ca6149be45e5,
    0x3f2acc7f57c29bdb, 0x699ae9f52cbe4794, 0x4bc1b3f0968dd39c, 0xbb6dc91da77961bd,
    0xbed65cf21aa2ee98, 0xd0f2cbb02e3b67c7, 0x93536795e3a33e88, 0xa80c038ccd5ccec8,
    0xb8ad50c6f649af94, 0xbce192de8a85b8ea, 0x17d835b85bbb15f3, 0x2f2e6163076bcfad,
    0xde4daaaca71dc9a5, 0xa6a2506687956571, 0xad87a3535c49ef28, 0x32d892fad841c342,
    0x7127512f72f27cce, 0xa7f32346f95978e3, 0x12e0b01abb051238, 0x15e034d40fa197ae,
    0x314dffbe0815a3b4, 0x027990f029623981, 0xcadcd4e59ef40c4d, 0x9abfd8766a33735c,
    0x0e3ea96b5304a7d0, 0xad0c42d6fc585992, 0x187306c89bc215a9, 0xd4a60abcf3792b95,
    0xf935451de4f21df2, 0xa9538f0419755787, 0xdb9acddff56ca510, 0xd06c98cd5c0975eb,
    0xe612a3cb9ecba951, 0xc766e62cfcadaf96, 0xee64435a9752fe72, 0xa192d576b245165a,
    0x0a8787bf8ecb74b2, 0x81b3e73d20b49b6f, 0x7fa8220ba3b2ecea, 0x245731c13ca42499,
    0xb78dbfaf3a8d83bd, 0xea1ad565322a1a0b, 0x60e61c23a3795013, 0x6606d7e446282b93,
    0x6ca4ecb15c5f91e1, 0x9f626da15c9625f3, 0xe51b38608ef25f57, 0x958a324ceb064572,
]


@pytest.mark.parametrize("n", range(64))
def test_siphash24_matches_the_paper_vectors(n):
    assert siphash24(bytes(range(n)), PAPER_K0, PAPER_K1) == PAPER_VECTORS[n]


def test_siphash24_with_the_zero_key():
    assert siphash24(b"") == 0x1E924B9D737700D7


# key -> (hash, partition of 3, partition of 7), from Rust's SipHasher over &[u8].
PINNED = {
    b"": (0xE849E8BB6FFE2567, 2, 3),
    b"a": (0xFEB15081B68CA86B, 1, 2),
    b"key": (0x1BF94D5174027FCA, 2, 6),
    b"hello": (0xD17F96BD0852CE12, 2, 2),
    b"user-1": (0x5B7BF110F671CD04, 1, 5),
    b"user-2": (0x3CA4B356C2D94AAE, 2, 6),
    b"alice": (0x00413784F5EC3D75, 2, 3),
    b"bob": (0x1E46DB6990B12CBE, 1, 1),
    b"12345678": (0xBA89BF5BEA67CEA9, 0, 1),                 # exactly one 8-byte block after the prefix
    b"order-000042": (0x76094ACB0B7E67FB, 1, 1),
    b"the quick brown fox jumps": (0x1994D17950C9C0D9, 2, 6),
    b"\x00": (0xB20DBE42DF95B57E, 1, 3),
    b"\xff\xfe\x00\x80": (0xF2C5DA2E0696C9BA, 1, 1),
    "café".encode(): (0xB670288F07362942, 0, 3),
}


@pytest.mark.parametrize("key", list(PINNED), ids=repr)
def test_key_lands_where_fluvio_puts_it(key):
    h, p3, p7 = PINNED[key]
    assert key_hash(key) == h
    partitioner = Partitioner()
    assert (partitioner.for_key(key, 3), partitioner.for_key(key, 7)) == (p3, p7)
    assert (partitioner.for_key(key, 3), partitioner.for_key(key, 7)) == (p3, p7)   # from the cache


def test_the_hash_covers_the_length_prefix():
    # Without the prefix the hash would be plain SipHash of the bytes.
    assert key_hash(b"abc") != siphash24(b"abc")
    assert key_hash(b"abc") == siphash24((3).to_bytes(8, "little") + b"abc")


def test_keyless_records_stick_to_a_partition_until_it_moves_on():
    p = Partitioner()
    assert [p.current_keyless(3) for _ in range(3)] == [0, 0, 0]
    assert [p.next_keyless(3) for _ in range(4)] == [1, 2, 0, 1]
    assert p.current_keyless(3) == 1


def test_keyless_skips_partitions_without_an_online_leader():
    p = Partitioner()
    assert [p.next_keyless(4, frozenset({0, 2})) for _ in range(4)] == [2, 0, 2, 0]
    assert [p.next_keyless(3, frozenset()) for _ in range(3)] == [1, 2, 0]      # none known online: plain round-robin
    assert p.next_keyless(3, None) == 1
