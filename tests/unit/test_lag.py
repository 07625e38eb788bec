"""ipc/lag.py: the one definition of consumer lag."""

import pytest

from rillet.ipc.lag import consumer_lag


@pytest.mark.parametrize("hw, offset, lag", [
    (10, 3, 6),        # seen 0..3, HW 10: 4..9 unseen
    (10, 9, 0),        # seen everything below the HW
    (0, -1, 0),        # empty partition
    (100, -1, 100),    # nothing seen yet
    (1, 0, 0),
    (5, 9, 0),         # seen past the HW (UNCOMMITTED reader, or a report older than the commit): never negative
    (-1, 3, None),     # HW unknown: no leader online
])
def test_consumer_lag(hw, offset, lag):
    assert consumer_lag(hw, offset) == lag
