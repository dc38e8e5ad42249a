"""The job table: every job's status and the indexes the answers read, under the one lock the service's parts share.

Every state change is written to ``jobs/<id>/status.json`` before the matching event goes out, so a client that
reads the file after an event never sees an older state. A status that could not be written (a full or read-only
spool) stays marked dirty and is written again by :meth:`JobTable.rewrite_dirty` until it is, so the disk catches up
with the events.

Cost of a status answer (issue 20): the running set, the queue (in run order) and the finished jobs (in the order
they ended) are kept as indexes updated at each state change, and each status's JSON text is kept from its last
write, so an answer costs O(what it lists), never O(history).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from bridge.jobs.protocol import STATES_FINAL, Job, ReplyTo
from bridge.jobs.queue import JobQueue
from bridge.jobs.records import dumps, null_non_finite
from bridge.jobs.spool import Spool
from engine.progress import CancelToken

log = logging.getLogger("aiedit.service")

SendFn = Callable[[ReplyTo, str, list[Any]], None]

MAX_HISTORY = 10_000  # finished jobs kept at most (aiedit serve --max-history), the oldest removed first
MAX_HISTORY_BYTES = 64 * 1024 * 1024  # ... and at most this many bytes of their statuses


class JobTable:
    """The jobs' state in memory and its writes to the spool. Callers hold :attr:`lock` around every use (it is
    re-entrant: a part of the service may call another's locked method while holding it)."""

    def __init__(self, spool: Spool, send: SendFn) -> None:
        self.spool, self.send = spool, send
        self.queue = JobQueue()
        self.lock = threading.RLock()
        self.closed = threading.Event()  # the daemon is stopping: nothing is queued again
        self.status: dict[str, dict[str, Any]] = {}
        self.taken_lower: set[str] = set()  # ids of status, lower-cased (ids are unique regardless of case)
        self.jobs: dict[str, Job] = {}  # queued and running jobs
        self.targets: dict[str, list[ReplyTo]] = {}  # who gets a job's events
        self.running: dict[str, CancelToken] = {}  # running job id -> its cancel token (one per busy worker)
        self.last_sent: dict[str, tuple[str, float, float]] = {}  # id -> (stage, fraction, time) of last event
        self.last_write: dict[str, float] = {}
        # status-answer indexes (see the module doc): JSON text of each status as last written, the finished
        # ones in the order they ended (with a non-decreasing time key, for ``since`` paging), and the statuses
        # whose last write failed; the running jobs are ``running`` (in start order), the queued ones the queue's
        self.texts: dict[str, str] = {}
        self.done_ids: list[str] = []
        self.done_keys: list[float] = []
        self.dirty: set[str] = set()
        # history bounds (issue 26): the finished jobs kept, by count and by the bytes of their statuses; those
        # evicted past either are forgotten here and their folders removed by the main loop (outside the lock)
        self.max_history, self.max_history_bytes = MAX_HISTORY, MAX_HISTORY_BYTES
        self.done_bytes: dict[str, int] = {}
        self.history_bytes = 0
        self.evicted: list[str] = []
        # who queued what (a sender's key: bridge.jobs.protocol.host_key, or "spool"), for the fair share of freed
        # places at --max-queued (bridge.jobs.admission); senders refused for room lately (key -> monotonic time)
        self.owner: dict[str, str] = {}
        self.queued_by: dict[str, int] = {}
        self.waiting: dict[str, float] = {}
        self.reserved: set[str] = set()  # ids being created (outside the lock): taken, and counted as queued
        self.on_room: list[Callable[[], None]] = []  # called when a job leaves the queue (the inbox waits on it)

    def write(self, st: dict[str, Any]) -> None:
        """Write ``st`` to its status.json and update the answer indexes. Never raises: a non-finite number
        becomes null (JSON cannot hold it), and a failed write leaves the status dirty for :meth:`rewrite_dirty`."""
        jid = st["id"]
        try:
            text = dumps(st)
        except ValueError:
            log.error("status of %s held a non-finite number; written as null", jid)
            null_non_finite(st)
            text = dumps(st)
        self.texts[jid] = text
        try:
            self.spool.write_status_data(jid, text.encode("utf-8"))
            self.dirty.discard(jid)
            self.spool.wrote(None)
        except (OSError, ValueError) as exc:
            self.spool.wrote(exc)
            if jid not in self.dirty:
                log.error("cannot write status of %s (will retry): %s", jid, exc)
            self.dirty.add(jid)

    def rewrite_dirty(self) -> None:
        """Write again the statuses whose last write failed (a full or read-only spool that recovered)."""
        if not self.dirty:
            return
        with self.lock:
            for jid in list(self.dirty):
                st = self.status.get(jid)
                if st is None:
                    self.dirty.discard(jid)
                else:
                    self.write(st)
            if not self.dirty:
                log.info("the spool is writable again: every status is up to date")

    def text(self, jid: str) -> str:
        """The JSON text of a status as last written."""
        text = self.texts.get(jid)
        if text is None:
            text = self.texts[jid] = dumps(self.status[jid])
        return text

    def index_done(self, jid: str, updated: float) -> None:
        key = max(float(updated), self.done_keys[-1]) if self.done_keys else float(updated)
        self.done_ids.append(jid)
        self.done_keys.append(key)
        size = len(self.text(jid)) if jid in self.status else 1000
        self.history_bytes += size - self.done_bytes.get(jid, 0)
        self.done_bytes[jid] = size
        self._trim_history()

    def _trim_history(self) -> None:
        """Forget the oldest finished jobs past :attr:`max_history` or :attr:`max_history_bytes`; their folders
        go in :attr:`evicted` for :meth:`take_evicted`."""
        drop = 0
        n = len(self.done_ids)
        while drop < n - 1 and (n - drop > self.max_history or self.history_bytes > self.max_history_bytes):
            jid = self.done_ids[drop]
            drop += 1
            self.history_bytes -= self.done_bytes.pop(jid, 0)
            st = self.status.get(jid)
            if st is not None and st["state"] in STATES_FINAL:
                self.forget(jid)
                self.evicted.append(jid)
        if drop:
            del self.done_ids[:drop]
            del self.done_keys[:drop]

    def reindex_done(self) -> None:
        """Drop finished ids no longer known (after retention forgot some) from the indexes."""
        keep = [i for i, j in enumerate(self.done_ids) if j in self.status]
        self.done_ids = [self.done_ids[i] for i in keep]
        self.done_keys = [self.done_keys[i] for i in keep]
        self.done_bytes = {j: self.done_bytes.get(j, 0) for j in self.done_ids}
        self.history_bytes = sum(self.done_bytes.values())

    def take_evicted(self) -> list[str]:
        """The ids whose folders are to be removed (history bounds), emptied."""
        out, self.evicted = self.evicted, []
        return out

    # -- the queue and who filled it ------------------------------------------------------------------------------

    def enqueue(self, job: Job, key: str, *, front: bool = False) -> None:
        """Queue ``job`` for sender ``key`` (counted against its share)."""
        self.queue.put(job.id, job.priority, key=job.retake_key, front=front)
        self.owner[job.id] = key
        self.queued_by[key] = self.queued_by.get(key, 0) + 1

    def dequeued(self, jid: str) -> None:
        """``jid`` left the queue (taken by a worker, or cancelled): its sender's count drops, room is told."""
        key = self.owner.pop(jid, None)
        if key is not None:
            n = self.queued_by.get(key, 0) - 1
            if n > 0:
                self.queued_by[key] = n
            else:
                self.queued_by.pop(key, None)
        for wake in self.on_room:
            wake()

    def taken(self, jid: str) -> bool:
        # case-insensitively: on macOS and Windows "A" and "a" would share one folder
        return jid.lower() in self.taken_lower or self.spool.job_exists(jid)

    def queued_count(self) -> int:
        """Jobs queued, and those being created (they will be queued)."""
        return len(self.queue) + len(self.reserved)

    def forget(self, jid: str) -> None:
        self.status.pop(jid, None)
        self.texts.pop(jid, None)
        self.taken_lower.discard(jid.lower())

    def finish(self, jid: str, state: str, error: str | None, **fields: Any) -> None:
        """End a queued or running job (``done``/``failed``/``cancelled``): write it, then tell its targets."""
        st = self.status[jid]
        st.update(fields)
        st.update(state=state, stage=state, error=error, updated=time.time())
        if state == "done":
            st["progress"] = 1.0
        self.write(st)
        self.index_done(jid, st["updated"])
        self.running.pop(jid, None)
        self.jobs.pop(jid, None)
        self.last_sent.pop(jid, None)
        self.last_write.pop(jid, None)
        log.info("job %s %s%s", jid, state, f": {error}" if error else "")
        if state == "done":
            self.emit(jid, "/aiedit/done", [jid, self.texts[jid]])  # the very text written to status.json
        elif state == "failed":
            self.emit(jid, "/aiedit/error", [jid, error or "failed"])
        else:
            self.emit(jid, "/aiedit/cancelled", [jid])
        self.targets.pop(jid, None)

    def emit(self, jid: str, address: str, args: list[Any]) -> None:
        for target in self.targets.get(jid, []):
            self.send(target, address, args)
