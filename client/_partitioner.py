"""Which partition a record goes to: Fluvio's rule, bit for bit.

Keyed records: SipHash-2-4 with a zero key over Rust's ``Hash`` of a byte slice,
which is the slice's length as 8 little-endian bytes followed by the bytes; the
64-bit result modulo the partition count. Python's ``hash()`` is salted per
process, so it is never used. Results are cached per key: producers tend to send
the same keys again and again, and the pure-Python hash costs a few microseconds.

Keyless records: round-robin over the partitions whose leader is online, one
partition per batch (sticky until its batch is sealed), which keeps batches full.
With ``linger(0)`` every record is its own batch, so keyless records go strictly
round-robin, as in Fluvio.
"""

from __future__ import annotations

import struct

_MASK = 0xFFFFFFFFFFFFFFFF
_LEN = struct.Struct("<Q")
_CACHE_LIMIT = 100_000


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _MASK


def siphash24(data: bytes, k0: int = 0, k1: int = 0) -> int:
    """SipHash-2-4 of ``data`` with the 128-bit key (k0, k1); returns a u64."""
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & _MASK; v1 = _rotl(v1, 13); v1 ^= v0; v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _MASK; v3 = _rotl(v3, 16); v3 ^= v2
            v0 = (v0 + v3) & _MASK; v3 = _rotl(v3, 21); v3 ^= v0
            v2 = (v2 + v1) & _MASK; v1 = _rotl(v1, 17); v1 ^= v2; v2 = _rotl(v2, 32)

    n = len(data)
    end = n - (n % 8)
    for i in range(0, end, 8):
        mi = int.from_bytes(data[i:i + 8], "little")
        v3 ^= mi
        rounds(2)
        v0 ^= mi
    last = ((n & 0xFF) << 56) | int.from_bytes(data[end:], "little")
    v3 ^= last
    rounds(2)
    v0 ^= last
    v2 ^= 0xFF
    rounds(4)
    return v0 ^ v1 ^ v2 ^ v3


def key_hash(key: bytes) -> int:
    """Fluvio's hash of a record key (Rust ``Hash`` for ``[u8]``: length prefix, then bytes)."""
    return siphash24(_LEN.pack(len(key)) + bytes(key))


class Partitioner:
    """Key -> partition (cached hash), and the sticky keyless partition.

    Not thread-safe on its own: the producer calls it under its lock.
    """

    __slots__ = ("_cache", "keyless")

    def __init__(self) -> None:
        self._cache: dict[bytes, int] = {}
        self.keyless = 0         # the sticky keyless partition; read it, move it with next_keyless

    def for_key(self, key: bytes, partition_count: int) -> int:
        h = self._cache.get(key)
        if h is None:
            h = self._hash_of(key)
        return h % partition_count

    def for_keys(self, keys: list[bytes], partition_count: int) -> list[int]:
        """``for_key`` of each key, in bulk: cached keys cost one C-level lookup each."""
        cache = self._cache
        hashes = list(map(cache.get, keys))
        if None in hashes:
            for i, h in enumerate(hashes):
                if h is None:
                    hashes[i] = self._hash_of(keys[i])
        return [h % partition_count for h in hashes]

    def _hash_of(self, key: bytes) -> int:
        h = self._cache.get(key)
        if h is None:
            h = key_hash(key)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[bytes(key)] = h
        return h

    def current_keyless(self, partition_count: int) -> int:
        """The partition keyless records go to now (sticky until its batch is sealed)."""
        return self.keyless % partition_count

    def next_keyless(self, partition_count: int, online: "frozenset[int] | None" = None) -> int:
        """Move keyless records to the next partition (called when the sticky batch is sealed).

        With ``online`` given, partitions not in it are skipped (their leader is
        down), as Fluvio does; when none is online, plain round-robin.
        """
        nxt = (self.keyless + 1) % partition_count
        if online:
            for step in range(partition_count):
                candidate = (nxt + step) % partition_count
                if candidate in online:
                    nxt = candidate
                    break
        self.keyless = nxt
        return nxt
