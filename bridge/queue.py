"""The job queue: interactive jobs before batch jobs, first come first served within a priority.

Holds only ids; the jobs themselves and their durable state live in the spool (see :mod:`bridge.service`).
Thread-safe: the OSC thread and the inbox thread put, the worker thread takes, anyone may remove (cancel).
One insertion-ordered dict per priority, so put, get, remove and reading the first ``n`` in run order cost
O(1) or O(n) whatever the queue's length (a status answer must not cost O(queue), see docs/architecture.md).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

RANK = {"interactive": 0, "batch": 1}


class JobQueue:
    def __init__(self) -> None:
        self._lanes: tuple[dict[str, None], ...] = ({}, {})  # one per rank, in arrival order
        self._cond = threading.Condition()
        self._closed = False

    def put(self, job_id: str, priority: str = "interactive") -> None:
        with self._cond:
            if job_id in self:
                return
            self._lanes[RANK.get(priority, 1)][job_id] = None
            self._cond.notify()

    def get(self, timeout: float | None = None) -> str | None:
        """The next id, waiting up to ``timeout`` seconds; None on timeout or after :meth:`close`."""
        with self._cond:
            while True:
                if not self._closed:
                    for lane in self._lanes:
                        if lane:
                            job_id = next(iter(lane))
                            del lane[job_id]
                            return job_id
                if self._closed or not self._cond.wait(timeout):
                    return None

    def remove(self, job_id: str) -> bool:
        """Take a queued job out (cancel); False if it was not queued."""
        with self._cond:
            for lane in self._lanes:
                if job_id in lane:
                    del lane[job_id]
                    return True
            return False

    def head(self, n: int) -> list[str]:
        """The first ``n`` queued ids in the order they will run (costs O(n), not O(queue))."""
        with self._cond:
            return list(itertools.islice(self._iter(), max(0, n)))

    def order(self) -> list[str]:
        """Queued ids in the order they will run."""
        with self._cond:
            return list(self._iter())

    def _iter(self) -> Iterator[str]:
        for lane in self._lanes:
            yield from lane

    def __len__(self) -> int:
        with self._cond:
            return sum(len(lane) for lane in self._lanes)

    def __contains__(self, job_id: object) -> bool:
        with self._cond:
            return any(job_id in lane for lane in self._lanes)

    def close(self) -> None:
        """Wake every waiter; :meth:`get` returns None from now on (queued ids stay for :meth:`order`)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
