"""Token buckets per class of broker call, shared by everything in the process.

Dhan publishes per-second limits by class (orders 10/s, history 5/s, quotes 1/s, other
20/s); staying under them client-side avoids 429s that would otherwise cost retries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["TokenBucket", "bucket", "reset_buckets"]


class TokenBucket:
    """``rate`` calls per second with bursts up to ``capacity``; ``acquire`` blocks until allowed."""

    def __init__(self, rate: float, capacity: float | None = None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = float(rate)
        self.capacity = float(capacity if capacity is not None else rate)
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self, tokens: float = 1.0) -> float:
        """Take ``tokens``, waiting as needed; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= tokens:
                    self._tokens -= tokens
                    return waited
                pause = (tokens - self._tokens) / self.rate
            self._sleep(pause)
            waited += pause


_BUCKETS: dict[tuple[str, str], TokenBucket] = {}
_LOCK = threading.Lock()


def bucket(broker: str, kind: str, rate: float) -> TokenBucket:
    """The process-wide bucket for ``(broker, kind)``, made on first use with ``rate``/s."""
    with _LOCK:
        key = (broker, kind)
        if key not in _BUCKETS:
            _BUCKETS[key] = TokenBucket(rate, capacity=1.0 if rate <= 1 else rate)
        return _BUCKETS[key]


def reset_buckets() -> None:
    """Forget every bucket (tests)."""
    with _LOCK:
        _BUCKETS.clear()
