"""Token buckets keyed by sender: how the answering thread bounds what one sender can make it do per second.

Used for status listings (per sender address and port), for wrong-token guesses (per sender host: a guesser
can pick a new port for every try, not a new address) and for job submissions. Memory is bounded: when more
than ``max_keys`` senders are tracked, the fullest buckets (senders that have been quiet) are forgotten first.
"""

from __future__ import annotations

import time
from collections.abc import Hashable


class Buckets:
    """``take(key)`` is True while ``key`` has a token left: ``burst`` at first, refilled at ``rate`` per second."""

    def __init__(self, rate: float, burst: float, max_keys: int = 4096) -> None:
        self.rate, self.burst, self.max_keys = float(rate), float(burst), max_keys
        self._state: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, monotonic time)

    def level(self, key: Hashable, now: float | None = None) -> float:
        """Tokens ``key`` has now (``burst`` for an unknown key)."""
        now = time.monotonic() if now is None else now
        tokens, last = self._state.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self.rate)

    def take(self, key: Hashable, n: float = 1.0) -> bool:
        now = time.monotonic()
        tokens = self.level(key, now)
        if tokens < n:
            self._state[key] = (tokens, now)
            return False
        if key not in self._state and len(self._state) >= self.max_keys:
            self._forget(now)
        self._state[key] = (tokens - n, now)
        return True

    def charge(self, key: Hashable, n: float = 1.0) -> None:
        """Spend ``n`` tokens whether or not they are there (a failure already happened); the level may go
        below zero, which lengthens the wait."""
        now = time.monotonic()
        if key not in self._state and len(self._state) >= self.max_keys:
            self._forget(now)
        self._state[key] = (max(-self.burst, self.level(key, now) - n), now)

    def wait_s(self, key: Hashable, n: float = 1.0) -> float:
        """Seconds until ``key`` has ``n`` tokens again."""
        return max(0.0, (n - self.level(key)) / self.rate) if self.rate > 0 else float("inf")

    def _forget(self, now: float) -> None:
        full = [k for k, (t, last) in self._state.items() if t + (now - last) * self.rate >= self.burst]
        for k in full or list(self._state)[: len(self._state) // 2]:
            del self._state[k]
