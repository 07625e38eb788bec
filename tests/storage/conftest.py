"""Storage test fixtures: real directories under tmp_path, a printed seed, a named logger."""

from __future__ import annotations

import logging
import os
import random

import pytest

from rillet.broker.storage import PartitionLog

LOGGER = logging.getLogger("rillet.test.storage")


@pytest.fixture
def rng(request) -> random.Random:
    """A seeded generator; the seed is printed (shown on failure). Set RILLET_TEST_SEED to replay."""
    seed = int(os.environ.get("RILLET_TEST_SEED") or random.randrange(2**32))
    print(f"{request.node.name}: seed={seed} (RILLET_TEST_SEED={seed} to replay)")
    return random.Random(seed)


@pytest.fixture
def open_log(tmp_path):
    """``open_log(name="p0", **options)`` -> PartitionLog in tmp_path/name; closed at teardown."""
    opened = []

    def _open(name: str = "p0", **options) -> PartitionLog:
        options.setdefault("logger", LOGGER)
        log = PartitionLog.open(tmp_path / name, **options)
        opened.append(log)
        return log

    yield _open
    for log in opened:
        if not log.closed:
            log.close()
