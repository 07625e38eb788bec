"""Retry policy of at-least-once producers, as pure code.

Strategies follow Fluvio (tokio-retry): FixedDelay repeats ``initial_delay``;
FibonacciBackoff gives d, d, 2d, 3d, 5d...; ExponentialBackoff raises the initial
delay in milliseconds to the n-th power (10 ms -> 10, 100, 1000 ms), each delay
capped at ``max_delay``. The seeds' example (5 retries, 10 ms, 2 s cap, 10 s in
all) gives 10, 100, 1000, 2000, 2000 ms.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from rillet.ipc.errors import InvalidArgument


class RetryStrategy(str, Enum):
    FixedDelay = "fixed"
    FibonacciBackoff = "fibonacci"
    ExponentialBackoff = "exponential"


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    max_retries: int = 4              # Fluvio's default
    initial_delay_ms: int = 20        # Fluvio's default
    max_delay_ms: int = 200_000       # Fluvio's default (200 s)
    timeout_ms: int = 300_000         # all attempts together; Fluvio's default (300 s)
    strategy: RetryStrategy = RetryStrategy.ExponentialBackoff

    def __post_init__(self) -> None:
        for name in ("max_retries", "initial_delay_ms", "max_delay_ms", "timeout_ms"):
            if getattr(self, name) < 0:
                raise InvalidArgument(f"{name} must not be negative, got {getattr(self, name)}")
        if not isinstance(self.strategy, RetryStrategy):
            object.__setattr__(self, "strategy", RetryStrategy(self.strategy))

    def delays_ms(self) -> list[int]:
        """The delay before each retry, in order (``max_retries`` of them)."""
        d = self.initial_delay_ms
        if self.strategy is RetryStrategy.FixedDelay:
            raw = [d] * self.max_retries
        elif self.strategy is RetryStrategy.FibonacciBackoff:
            raw, a, b = [], d, d
            for _ in range(self.max_retries):
                raw.append(a)
                a, b = b, a + b
        else:
            raw = [d ** n if d > 1 else d for n in range(1, self.max_retries + 1)]
        return [min(x, self.max_delay_ms) for x in raw]
