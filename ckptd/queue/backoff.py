"""Retry delays: exponential backoff with full jitter (delay drawn uniformly in [0, min(cap, base·2^(n-1))]).

Full jitter spreads the retries of jobs that failed together (e.g. a full disk) instead of
re-synchronising them at every power of two.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

DEFAULT_BASE_S = 30.0
DEFAULT_CAP_S = 3600.0


@dataclass(frozen=True)
class Backoff:
    base_s: float = DEFAULT_BASE_S
    cap_s: float = DEFAULT_CAP_S
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError(
                f"backoff needs 0 < base_s <= cap_s, got base_s={self.base_s}, cap_s={self.cap_s}"
            )

    def ceiling(self, attempt: int) -> float:
        """The largest delay after failed attempt number ``attempt`` (1-based)."""
        exponent = min(max(attempt, 1) - 1, 62)  # 2**62 already dwarfs any cap; avoids float overflow
        return min(self.cap_s, self.base_s * 2.0**exponent)

    def delay(self, attempt: int) -> float:
        return self.rng.uniform(0.0, self.ceiling(attempt))
