"""The job queue: interactive jobs before batch jobs, first come first served within a priority.

Holds only ids (and each job's re-take key, for the pool's choice of job per worker, see
:mod:`bridge.workers.pool`); the jobs themselves and their durable state live in the spool (see
:mod:`bridge.jobs.service`). Thread-safe: the OSC thread and the inbox thread put, the worker threads take, anyone
may remove (cancel). One insertion-ordered dict per priority, so put, get, remove and reading the first ``n`` in run
order cost O(1) or O(n) whatever the queue's length.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator

RANK = {"interactive": 0, "batch": 1}
CHOICE = 64  # how many of the first queued jobs a worker chooses among (see :meth:`JobQueue.get`)

# Given the first queued (id, re-take key) pairs in run order, the id a worker takes now, or None for none yet.
Choose = Callable[[list[tuple[str, str | None]]], str | None]


class JobQueue:
    def __init__(self) -> None:
        self._lanes: tuple[dict[str, str | None], ...] = ({}, {})  # one per rank, in run order: id -> re-take key
        self._cond = threading.Condition()
        self._closed = False

    def put(self, job_id: str, priority: str = "interactive", *, key: str | None = None,
            front: bool = False) -> None:
        """Queue ``job_id`` last in its priority, or first with ``front`` (a job whose worker died)."""
        with self._cond:
            if job_id in self:
                return
            rank = RANK.get(priority, 1)
            if front:
                lane = {job_id: key}
                lane.update(self._lanes[rank])
                self._lanes[rank].clear()
                self._lanes[rank].update(lane)
            else:
                self._lanes[rank][job_id] = key
            self._cond.notify_all()  # every idle worker looks: the job may be meant for one in particular

    def get(self, timeout: float | None = None, choose: Choose | None = None) -> str | None:
        """The next id, waiting up to ``timeout`` seconds; None on timeout or after :meth:`close`.

        With ``choose``, the id it picks among the first :data:`CHOICE` queued ones. It is called under the
        queue's lock, so it must not call back into the queue nor take a lock that is held while calling the
        queue. When it picks none, the call waits for the next put (or the timeout) and returns None: the caller
        asks again."""
        with self._cond:
            while True:
                if not self._closed and any(self._lanes):
                    if choose is None:
                        lane = next(lane for lane in self._lanes if lane)
                        job_id = next(iter(lane))
                        del lane[job_id]
                        return job_id
                    job_id = choose(list(itertools.islice(self._items(), CHOICE)))
                    for lane in self._lanes:
                        if job_id in lane:
                            del lane[job_id]
                            return job_id
                    self._cond.wait(timeout)
                    return None
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
            return [j for j, _ in itertools.islice(self._items(), max(0, n))]

    def order(self) -> list[str]:
        """Queued ids in the order they will run."""
        with self._cond:
            return [j for j, _ in self._items()]

    def _items(self) -> Iterator[tuple[str, str | None]]:
        for lane in self._lanes:
            yield from lane.items()

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
