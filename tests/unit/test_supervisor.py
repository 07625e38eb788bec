"""Pure parts of the SC's keepers: when the supervisor restarts the SC, and when an SPU
without an SC gives up (as tables)."""

from __future__ import annotations

import pytest

from rillet.broker.spu.process import sc_lost_timeout_s
from rillet.broker.supervisor import is_crash, restart_delay_s


@pytest.mark.parametrize("crashes, delay", [
    (0, 0.0), (1, 0.0),          # a kill, or a first crash: back at once
    (2, 0.1), (3, 0.2), (4, 0.4), (10, 5.0), (100, 5.0),   # a crash loop: doubling, capped
])
def test_supervisor_restart_delay(crashes, delay):
    assert restart_delay_s(crashes) == pytest.approx(delay)


@pytest.mark.parametrize("code, ready, lived_s, crash", [
    (-9, True, 0.3, False),      # SIGKILL of a ready SC, however soon: a drill, restart at once
    (-9, False, 0.3, True),      # killed before it was ready
    (1, False, 10.0, True),      # never became ready
    (1, True, 1.0, True),        # an error soon after start
    (1, True, 60.0, False),      # an error after a long healthy run
])
def test_supervisor_tells_crashes_from_kills(code, ready, lived_s, crash):
    assert is_crash(code, ready, lived_s) is crash


@pytest.mark.parametrize("value, expected", [
    (None, 60.0), ("5", 5.0), ("0.5", 0.5), ("0", 60.0), ("-1", 60.0), ("soon", 60.0), ("", 60.0),
])
def test_spu_sc_lost_timeout_setting(value, expected):
    env = {} if value is None else {"RILLET_SC_LOST_TIMEOUT_S": value}
    assert sc_lost_timeout_s(env) == expected
