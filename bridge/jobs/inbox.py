"""The spool inbox, one file at a time: a job or a cancel written by a client that speaks no OSC (REAPER's
scripts). A file still being written is left for the next scan; a bad one is moved to ``inbox/rejected/`` with its
``.error.txt``; an accepted or done one is removed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.jobs.protocol import CancelRequest, ProtocolError, ReplyTo, cancel_from_object, decode_json, valid_id
from bridge.jobs.spool import SETTLE_S, read_small_file
from bridge.jobs.table import JobTable

log = logging.getLogger("aiedit.service")

INBOX_MAX_BYTES = 1 << 20


SubmitFn = Callable[[object, ReplyTo | None], tuple[str | None, str | None]]
CancelFn = Callable[[CancelRequest, ReplyTo | None], str | None]


class Inbox:
    """Reads files for ``submit`` and ``cancel`` (the service's own, so the inbox is one more transport)."""

    def __init__(self, table: JobTable, *, submit: SubmitFn, cancel: CancelFn, max_queued: int) -> None:
        self.table, self.submit, self.cancel, self.max_queued = table, submit, cancel, max_queued
        self._seen: dict[str, float] = {}  # unparseable inbox files: first seen (monotonic)

    def handle_file(self, path: Path) -> bool:
        """Consume one inbox file (job or ``"op": "cancel"``); False leaves it for the next scan."""
        t = self.table
        try:
            age = time.time() - path.lstat().st_mtime
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
        if len(t.queue) >= self.max_queued:
            return False  # busy: a spool job waits in the inbox for room (no client reads inbox/rejected/ for it)
        accepted, error = self.submit(obj, None)
        if accepted:
            path.unlink(missing_ok=True)
        else:
            t.spool.reject(path, error or "refused")
        return True

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
            same = self.table.spool.read_job(jid) == {k: v for k, v in obj.items() if k != "token"}
        except (OSError, ValueError, TypeError):
            return False
        return same and mtime <= created
