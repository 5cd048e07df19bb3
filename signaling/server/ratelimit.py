"""Per-user token buckets for the operations that create state (call creation, joins)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from signaling.errors import RateLimited


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """``rate`` operations per second per key, with bursts up to ``burst``; refusals raise ``RateLimited``."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}
        self.refused = 0

    def check(self, key: str, what: str) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.clear()
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            self.refused += 1
            wait = (1.0 - bucket.tokens) / self.rate
            raise RateLimited(f"too many {what} requests from {key}; retry in {wait:.2f}s")
        bucket.tokens -= 1.0
