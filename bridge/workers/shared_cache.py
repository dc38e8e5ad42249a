"""The stage cache folder that several local workers of one daemon share when no ``--cache-dir`` is given.

A private folder (0700) made afresh in the temporary folder, outside the spool (a fixed name in the spool could be
a planted link the cache would write through and read stages from), removed at stop. A daemon killed with SIGKILL
cannot remove it, so the folder is locked for the daemon's life (the spool's own lock, :class:`SpoolLock`: the
kernel drops it with the process) and every start removes the folders of this kind that no live daemon holds.
When the temporary folder is full or unwritable, the workers run without a shared disk cache (each keeps its
stages in memory) instead of failing their jobs.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

from bridge.jobs.spool import SpoolLock

log = logging.getLogger("aiedit.daemon")

PREFIX = "aiedit-stage-cache-"
YOUNG_S = 10.0  # a folder this new may be a starting daemon's, not locked yet: left alone


class SharedCache:
    """The private folder, made and locked by :meth:`create`; ``path`` is None when it could not be made."""

    def __init__(self) -> None:
        self.path: str | None = None
        self._lock: SpoolLock | None = None

    def create(self, parent: str | None = None) -> str | None:
        remove_stale(parent)
        try:
            path = tempfile.mkdtemp(prefix=PREFIX, dir=parent)
        except OSError as exc:
            log.warning("no shared stage cache (%s); each worker keeps its stages in memory", exc.strerror or exc)
            return None
        lock = SpoolLock(Path(path))
        try:
            locked = lock.acquire()
        except OSError as exc:
            locked = False
            log.warning("cannot lock the stage cache folder %s (%s)", path, exc.strerror or exc)
        if not locked:
            shutil.rmtree(path, ignore_errors=True)
            return None
        self.path, self._lock = path, lock
        return path

    def remove(self) -> None:
        if self.path is None:
            return
        if self._lock is not None:
            self._lock.release()
        shutil.rmtree(self.path, ignore_errors=True)
        self.path = self._lock = None


def remove_stale(parent: str | None = None) -> list[str]:
    """Remove this user's private stage cache folders that no live daemon holds (left by a SIGKILL); returns them."""
    base = Path(parent or tempfile.gettempdir())
    removed = []
    try:
        names = [n for n in os.listdir(base) if n.startswith(PREFIX)]
    except OSError:
        return removed
    now = time.time()
    for name in names:
        path = base / name
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or now - st.st_mtime < YOUNG_S:
            continue
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            continue  # another user's: not ours to judge
        lock = SpoolLock(path)
        try:
            free = lock.acquire()
        except OSError:
            continue
        if not free:
            continue  # a live daemon's
        lock.release()
        shutil.rmtree(path, ignore_errors=True)
        removed.append(str(path))
    if removed:
        log.info("removed %d stage cache folder(s) left by a daemon that was killed", len(removed))
    return removed
