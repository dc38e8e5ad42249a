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

from bridge.jobs.protocol import Job, ReplyTo
from bridge.jobs.queue import JobQueue
from bridge.jobs.records import dumps, null_non_finite
from bridge.jobs.spool import Spool
from engine.progress import CancelToken

log = logging.getLogger("aiedit.service")

SendFn = Callable[[ReplyTo, str, list[Any]], None]


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
        except (OSError, ValueError) as exc:
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

    def taken(self, jid: str) -> bool:
        # case-insensitively: on macOS and Windows "A" and "a" would share one folder
        return jid.lower() in self.taken_lower or self.spool.job_exists(jid)

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
