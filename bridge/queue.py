"""The job queue: interactive jobs before batch jobs, first come first served within a priority.

Holds only ids (and each job's re-take key, for the pool's choice); the jobs themselves and their durable state
live in the spool (see :mod:`bridge.service`). Thread-safe: the OSC thread and the inbox thread put, the worker
threads take, anyone may remove (cancel).
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable

RANK = {"interactive": 0, "batch": 1}

# Given the queued (id, re-take key) pairs in run order, the id a worker takes now, or None to take nothing yet.
Choose = Callable[[list[tuple[str, str | None]]], str | None]


class JobQueue:
    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str]] = []
        self._members: dict[str, tuple[int, str | None]] = {}  # queued id -> (its heap entry's seq, re-take key)
        self._seq = itertools.count()
        self._front = itertools.count(-1, -1)  # re-queued jobs go before every job of their priority
        self._cond = threading.Condition()
        self._closed = False

    def put(self, job_id: str, priority: str = "interactive", *, key: str | None = None,
            front: bool = False) -> None:
        with self._cond:
            if job_id in self._members:
                return
            seq = next(self._front) if front else next(self._seq)
            self._members[job_id] = (seq, key)
            heapq.heappush(self._heap, (RANK.get(priority, 1), seq, job_id))
            self._cond.notify_all()  # every idle worker looks: the job may be meant for one in particular

    def get(self, timeout: float | None = None, choose: Choose | None = None) -> str | None:
        """The next id, waiting up to ``timeout`` seconds; None on timeout or after :meth:`close`.

        With ``choose`` (called under the queue's lock: it must not call back into the queue or take a lock
        that is held while calling it), the id it picks among the queued ones; when it picks none the call
        waits for the next put (or the timeout) and returns None, so the caller asks again."""
        with self._cond:
            while True:
                self._drop_removed()
                if self._heap and not self._closed:
                    if choose is None:
                        _, _, job_id = heapq.heappop(self._heap)
                        self._members.pop(job_id, None)
                        return job_id
                    queued = [(j, self._members[j][1]) for _, seq, j in sorted(self._heap) if self._live(seq, j)]
                    job_id = choose(queued)
                    if job_id is not None and job_id in self._members:
                        del self._members[job_id]  # its heap entry is dropped lazily
                        return job_id
                    self._cond.wait(timeout)
                    return None
                if self._closed or not self._cond.wait(timeout):
                    return None

    def remove(self, job_id: str) -> bool:
        """Take a queued job out (cancel); False if it was not queued."""
        with self._cond:
            if job_id not in self._members:
                return False
            del self._members[job_id]
            # its heap entry is dropped lazily (a later put of the id pushes a new entry with a new seq)
            return True

    def order(self) -> list[str]:
        """Queued ids in the order they will run."""
        with self._cond:
            return [j for _, seq, j in sorted(self._heap) if self._live(seq, j)]

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

    def _live(self, seq: int, job_id: str) -> bool:
        """Whether a heap entry is the current one of a queued id (removed ids leave stale entries behind)."""
        m = self._members.get(job_id)
        return m is not None and m[0] == seq

    def _drop_removed(self) -> None:
        while self._heap and not self._live(self._heap[0][1], self._heap[0][2]):
            heapq.heappop(self._heap)
