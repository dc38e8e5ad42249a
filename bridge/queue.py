"""The job queue: interactive jobs before batch jobs, first come first served within a priority.

Holds only ids; the jobs themselves and their durable state live in the spool (see :mod:`bridge.service`).
Thread-safe: the OSC thread and the inbox thread put, the worker thread takes, anyone may remove (cancel).
"""

from __future__ import annotations

import heapq
import itertools
import threading

RANK = {"interactive": 0, "batch": 1}


class JobQueue:
    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str]] = []
        self._members: set[str] = set()
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, job_id: str, priority: str = "interactive") -> None:
        with self._cond:
            if job_id in self._members:
                return
            self._members.add(job_id)
            heapq.heappush(self._heap, (RANK.get(priority, 1), next(self._seq), job_id))
            self._cond.notify()

    def get(self, timeout: float | None = None) -> str | None:
        """The next id, waiting up to ``timeout`` seconds; None on timeout or after :meth:`close`."""
        with self._cond:
            while True:
                self._drop_removed()
                if self._heap and not self._closed:
                    _, _, job_id = heapq.heappop(self._heap)
                    self._members.discard(job_id)
                    return job_id
                if self._closed or not self._cond.wait(timeout):
                    return None

    def remove(self, job_id: str) -> bool:
        """Take a queued job out (cancel); False if it was not queued."""
        with self._cond:
            if job_id not in self._members:
                return False
            self._members.discard(job_id)
            # its heap entry is dropped lazily (ids are never reused, so it cannot come back)
            return True

    def order(self) -> list[str]:
        """Queued ids in the order they will run."""
        with self._cond:
            return [j for _, _, j in sorted(self._heap) if j in self._members]

    def __len__(self) -> int:
        with self._cond:
            return len(self._members)

    def __contains__(self, job_id: object) -> bool:
        with self._cond:
            return job_id in self._members

    def close(self) -> None:
        """Wake every waiter; :meth:`get` returns None from now on (queued ids stay for :meth:`order`)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _drop_removed(self) -> None:
        while self._heap and self._heap[0][2] not in self._members:
            heapq.heappop(self._heap)
