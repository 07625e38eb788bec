"""The storage package's public surface, pinned."""

import rillet.broker.storage as storage


def test_exports():
    assert storage.__all__ == [
        "LeaderEpochCache",
        "PartitionLog",
        "RecoveryCut",
        "read_checkpoint",
        "write_atomic",
        "write_checkpoint",
    ]
    assert all(hasattr(storage, name) for name in storage.__all__)
