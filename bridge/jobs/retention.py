"""How long finished jobs are kept: their folders (status and takes) and rejected inbox files are deleted
``--keep-days`` after they ended, at start and hourly."""

from __future__ import annotations

import logging
import time

from bridge.jobs.protocol import STATES_FINAL
from bridge.jobs.table import JobTable

log = logging.getLogger("aiedit.service")

KEEP_DAYS = 14.0


class Retention:
    def __init__(self, table: JobTable, keep_days: float) -> None:
        self.table, self.keep_days = table, keep_days

    def prune(self) -> int:
        """Delete the folders of jobs that finished more than ``keep_days`` ago (0: keep everything); returns
        how many. Memory is updated under the lock, the folders are removed outside it."""
        t = self.table
        cutoff = self._cutoff()
        if cutoff is None:
            return 0
        with t.lock:
            old = [jid for jid, st in t.status.items()
                   if st["state"] in STATES_FINAL and st["updated"] < cutoff and jid not in t.dirty]
            for jid in old:
                t.forget(jid)
            if old:
                keep = [i for i, j in enumerate(t.done_ids) if j in t.status]
                t.done_ids = [t.done_ids[i] for i in keep]
                t.done_keys = [t.done_keys[i] for i in keep]
        self.remove_folders(old)
        n = t.spool.prune_rejected(cutoff)
        if n:
            log.info("removed %d rejected inbox file(s) older than %g days", n, self.keep_days)
        return len(old)

    def _cutoff(self) -> float | None:
        return time.time() - self.keep_days * 86400.0 if self.keep_days > 0 else None

    def remove_folders(self, ids: list[str]) -> None:
        for jid in ids:
            self.table.spool.remove_job(jid)
        if ids:
            log.info("removed %d finished job(s) older than %g days (aiedit serve --keep-days)", len(ids),
                     self.keep_days)
