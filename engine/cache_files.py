"""The stage cache's files: entries read whole into memory, regular files only, within a size cap.

An entry is one file ``<key>.safetensors`` in a folder that other processes (several workers of one daemon, a
user) can also write. So a read never maps the file (a mapped tensor whose file is truncated kills the process
with SIGBUS), never blocks (a FIFO or a device planted at an entry is opened with ``O_NONBLOCK`` and refused by
``fstat``), never follows a link, and never reads more than :data:`MAX_ENTRY_BYTES`; whatever is wrong with an entry
makes it a miss and it is removed. The folder is kept under a byte cap, least recently used entries first (a hit
sets the entry's mtime), checked after each write and swept at start. No torch here: the daemon sweeps the
folder before any worker has loaded a model.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

log = logging.getLogger("aiedit.engine")

SUFFIX = ".safetensors"
PARTIAL = ".partial"
MAX_ENTRY_BYTES = 256 * 1024 * 1024  # LoRA adapters + e_opt are a few MB for the real models
DEFAULT_CAP_BYTES = 2 * 1024**3  # at most this by default ...
DEFAULT_CAP_FREE_SHARE = 0.1  # ... and at most this share of the free space where the folder lives
MIN_CAP_BYTES = 16 * 1024**2
STALE_PARTIAL_S = 3600.0  # a temporary file this old was left by a killed writer


def default_cap_bytes(folder: str | os.PathLike[str]) -> int:
    """The cap when none is given: a tenth of the free space on the folder's disk (or the nearest existing parent's),
    between :data:`MIN_CAP_BYTES` and :data:`DEFAULT_CAP_BYTES`."""
    p = Path(folder)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        free = shutil.disk_usage(p).free
    except OSError:
        return MIN_CAP_BYTES
    return int(max(MIN_CAP_BYTES, min(DEFAULT_CAP_BYTES, free * DEFAULT_CAP_FREE_SHARE)))


class CacheFiles:
    """The entries of one cache folder (created 0700 on first write)."""

    def __init__(self, folder: str | os.PathLike[str], max_bytes: int | None = None) -> None:
        self.folder = Path(folder)
        self.max_bytes = int(max_bytes) if max_bytes is not None else default_cap_bytes(self.folder)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}{SUFFIX}"

    def read(self, key: str) -> bytes | None:
        """The entry's bytes, copied into memory, or None (a miss; an unusable entry is removed). A hit counts as
        a use for the LRU order."""
        path = self.path(key)
        flags = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
                 | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            return None
        except OSError as exc:  # a link (ELOOP), a folder on some systems, unreadable
            self.discard(key, f"cannot open it ({exc.strerror or exc})")
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self.discard(key, "not a regular file")
                return None
            if st.st_size > MAX_ENTRY_BYTES:
                self.discard(key, f"{st.st_size} bytes, over {MAX_ENTRY_BYTES}")
                return None
            data = _read_exactly(fd, st.st_size)
            if data is None:
                self.discard(key, "it changed size while it was read")
                return None
            with contextlib.suppress(OSError):
                os.utime(fd if os.utime in os.supports_fd else path)  # the LRU order: last use
            return data
        except OSError as exc:
            self.discard(key, f"cannot read it ({exc.strerror or exc})")
            return None
        finally:
            os.close(fd)

    def write(self, key: str, data: bytes) -> None:
        """Store an entry (a unique temporary name, then a rename: several writers may store one key at once),
        then trim the folder to the cap. OSError when it cannot be written (a full disk); nothing is left behind."""
        if len(data) > min(MAX_ENTRY_BYTES, self.max_bytes):
            return  # larger than any entry may be: not cached
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=PARTIAL, dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, self.path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.trim(keep=key)

    def discard(self, key: str, why: str) -> None:
        """Remove an unusable entry, whatever it is (a file, a link, a FIFO, a folder), and say why once."""
        log.warning("stage cache entry %s is unusable (%s): removed", key, why)
        remove_entry(self.path(key))

    def trim(self, keep: str | None = None) -> None:
        """Delete least recently used entries until the folder's entries fit the cap (``keep`` goes last)."""
        entries = []
        total = 0
        for name, st in _scan(self.folder):
            if name.endswith(SUFFIX) and stat.S_ISREG(st.st_mode):
                entries.append((name == f"{keep}{SUFFIX}", st.st_mtime, name, st.st_size))
                total += st.st_size
        entries.sort()
        for _, _, name, size in entries:
            if total <= self.max_bytes:
                break
            with contextlib.suppress(OSError):
                os.unlink(self.folder / name)
                total -= size

    def sweep(self) -> None:
        """At start: remove what is not an entry (temporary files of killed writers, anything but a regular file
        at an entry's name), then trim to the cap."""
        now = time.time()
        for name, st in _scan(self.folder):
            path = self.folder / name
            if name.endswith(PARTIAL) and now - st.st_mtime > STALE_PARTIAL_S:
                remove_entry(path)
            elif name.endswith(SUFFIX) and not stat.S_ISREG(st.st_mode):
                remove_entry(path)
        self.trim()


def remove_entry(path: Path) -> None:
    """Unlink ``path`` (a link itself, never its target) or, if it is a real folder, remove the folder."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    try:
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc.strerror or exc)


def _scan(folder: Path) -> list[tuple[str, os.stat_result]]:
    try:
        with os.scandir(folder) as it:
            out = []
            for e in it:
                with contextlib.suppress(OSError):
                    out.append((e.name, e.stat(follow_symlinks=False)))
            return out
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            log.warning("cannot list the stage cache %s: %s", folder, exc.strerror or exc)
        return []


def _read_exactly(fd: int, size: int) -> bytes | None:
    """``size`` bytes from ``fd``, or None when the file holds fewer (truncated meanwhile) or more."""
    chunks, got = [], 0
    while got < size:
        chunk = os.read(fd, min(size - got, 1 << 24))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    if os.read(fd, 1):
        return None
    return b"".join(chunks)
