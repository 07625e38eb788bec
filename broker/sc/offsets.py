"""Durable consumer offsets, kept by the SC (being built: see issue "Consumers")."""

from __future__ import annotations

from pathlib import Path
from typing import Callable


class ConsumerOffsetStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def routes(self) -> dict[type, Callable]:
        """Admin message type -> handler, merged into the SC's routes."""
        return {}

    def forget_topic(self, topic: str) -> None:
        """Drop every offset of a deleted topic."""

    def close(self) -> None:
        pass
