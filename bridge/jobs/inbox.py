"""The spool inbox, one file at a time: a job or a cancel written by a client that speaks no OSC (REAPER's
scripts). A file still being written is left for the next scan; a bad one is moved to ``inbox/rejected/`` with its
``.error.txt``; an accepted or done one is removed.

A job file that cannot be taken now — the queue is full, the spool's fair share of it is used, the spool's job
budget is spent, or its disk is full — waits in the inbox (its clients do not read ``inbox/rejected/``). It is read
once: while the inbox waits it is known by name, time and size and not read again, and the watcher looks again only
when told of room (:attr:`bridge.jobs.table.JobTable.on_room`), when the budget refills, or when a new file lands
(a cancel among them is still read and done at once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.jobs.admission import SPOOL
from bridge.jobs.protocol import (
    CancelRequest,
    ProtocolError,
    ReplyTo,
    cancel_from_object,
    decode_json,
    known_fields,
    valid_id,
)
from bridge.jobs.spool import SETTLE_S, Wait, read_small_file
from bridge.jobs.table import JobTable

log = logging.getLogger("aiedit.service")

INBOX_MAX_BYTES = 1 << 20
MAX_WAITING = 100_000  # files remembered as waiting (past this they are forgotten and read again)
DISK_FULL_RETRY_S = 5.0

SubmitFn = Callable[[object, ReplyTo | None], tuple[str | None, str | None]]
CancelFn = Callable[[CancelRequest, ReplyTo | None], str | None]
SpoolWaitFn = Callable[[], float | None]


class Inbox:
    """Reads files for ``submit`` and ``cancel`` (the service's own, so the inbox is one more transport);
    ``spool_wait`` says whether a spool job may go ahead now (:meth:`bridge.jobs.admission.Admission.spool_wait`)."""

    def __init__(self, table: JobTable, *, submit: SubmitFn, cancel: CancelFn, spool_wait: SpoolWaitFn) -> None:
        self.table, self.submit, self.cancel, self.spool_wait = table, submit, cancel, spool_wait
        self._seen: dict[str, float] = {}  # unparseable inbox files: first seen (monotonic)
        self._waiting: dict[str, tuple[int, int]] = {}  # job files waiting for room: name -> (mtime ns, size)
        self._blocked: Wait | None = None  # this scan found no room (or budget): job files are not read again

    def handle_file(self, path: Path) -> bool | Wait:
        """Consume one inbox file (job or ``"op": "cancel"``): True when consumed, False to see it at the next
        scan, a :class:`Wait` when it waits for room (see the module doc)."""
        t = self.table
        try:
            st = path.lstat()
        except FileNotFoundError:
            return True
        except OSError as exc:
            self._reject_file(path, f"cannot read the file: {exc.strerror or exc}")
            return True
        sig = (st.st_mtime_ns, st.st_size)
        ready = False  # a place and a budget token are ours for this file
        if self._waiting.get(path.name) == sig:  # a job file known to wait: room first, then (maybe) read it
            if self._blocked is None:
                wait = self.spool_wait()
                ready = wait is None
                if not ready:
                    self._blocked = Wait(wait if wait is not None else float("inf"))
            if self._blocked is not None:
                return self._blocked  # still no room: not read again
        age = time.time() - st.st_mtime
        try:
            data = read_small_file(path, INBOX_MAX_BYTES)
        except FileNotFoundError:
            return True
        except OSError as exc:
            self._reject_file(path, f"cannot read the file: {exc.strerror or exc}")
            return True
        if data is None:
            self._reject_file(path, "the file is too large to be a message")
            return True
        try:
            obj = decode_json(data, "message")
        except ProtocolError as exc:
            # probably still being written in place; the time since we first saw it also counts, as a file whose
            # mtime lies in the future would otherwise never look settled and be re-read forever
            now = time.monotonic()
            if len(self._seen) > 10_000:
                self._seen.clear()
            seen = now - self._seen.setdefault(path.name, now)
            if max(age, seen) < SETTLE_S:
                return False
            self._seen.pop(path.name, None)
            self._reject_file(path, str(exc))
            return True
        self._seen.pop(path.name, None)
        if obj.get("op") == "cancel":
            self._cancel_file(path, obj)
            return True
        jid = obj.get("id")
        if valid_id(jid):
            with t.lock:
                if jid in t.status and self._accepted_from(jid, obj, time.time() - age):
                    path.unlink(missing_ok=True)  # accepted before a crash, file not yet removed
                    return True
        if not ready and self._blocked is None and (wait := self.spool_wait()) is not None:
            self._blocked = Wait(wait)
        if self._blocked is not None:
            if len(self._waiting) >= MAX_WAITING:
                self._waiting.clear()
            self._waiting[path.name] = sig
            return self._blocked
        self._waiting.pop(path.name, None)
        accepted, error = self.submit(obj, None)
        if accepted:
            path.unlink(missing_ok=True)
        elif error and error.startswith("busy: the spool's disk is full"):
            return Wait(DISK_FULL_RETRY_S)  # left in the inbox: it is sent again once there is space
        else:
            t.spool.reject(path, error or "refused")
        return True

    def end_scan(self, names: set[str]) -> None:
        """The watcher went through the inbox (``names``: the files it found). Files no longer there are
        forgotten; the spool counts as a sender waiting for room while job files wait, so freed places are
        shared with it (see :meth:`bridge.jobs.admission.Admission.room`)."""
        for name in [n for n in self._waiting if n not in names]:
            del self._waiting[name]
        blocked, self._blocked = self._blocked, None
        with self.table.lock:
            if self._waiting and blocked is not None and blocked.seconds == float("inf"):
                self.table.waiting[SPOOL] = time.monotonic()
            else:
                self.table.waiting.pop(SPOOL, None)

    def _reject_file(self, path: Path, msg: str) -> None:
        log.info("rejected inbox file %s: %s", path.name, msg)
        self.table.spool.reject(path, msg)

    def _cancel_file(self, path: Path, obj: dict[str, Any]) -> None:
        try:
            req = cancel_from_object(obj)
        except ProtocolError as exc:
            self._reject_file(path, str(exc))
            return
        err = self.cancel(req, None)
        if err:
            self._reject_file(path, err)
        else:
            path.unlink(missing_ok=True)

    def _accepted_from(self, jid: str, obj: dict[str, Any], mtime: float) -> bool:
        """True when job ``jid`` was accepted from this very file (a daemon killed between accepting it and
        removing it): same content, and the file is older than the job. A copy dropped later is a duplicate
        and is rejected with an ``.error.txt`` like any other."""
        try:
            created = float(self.table.status[jid].get("created") or 0)
            same = known_fields(self.table.spool.read_job(jid)) == known_fields(obj)
        except (OSError, ValueError, TypeError):
            return False
        return same and mtime <= created
