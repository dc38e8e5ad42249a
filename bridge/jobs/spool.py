"""The spool folder: the daemon's durable state and the file transport for clients without sockets.

Every file a client may read is replaced atomically (temporary name in the same folder, then
``os.replace``), so a reader sees the old or the new content, never a mix. The inbox is watched with
watchdog for latency and rescanned every second as a backstop (events can be lost, and a file written in
place may be caught half-written).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from bridge.jobs.safe_dir import DIR_MODE, SafeDir

log = logging.getLogger("aiedit.spool")

HEARTBEAT_S = 2.0
STALE_S = 10.0
SETTLE_S = 2.0  # an unparseable inbox file younger than this may still be being written: retry, don't reject


LOCK_NAME = "daemon.lock"


class SpoolLock:
    """An OS-level exclusive lock on the spool folder itself (POSIX) and on ``<spool>/daemon.lock``, held open
    for the daemon's life.

    ``flock`` (POSIX) or ``msvcrt.locking`` (Windows) is released by the kernel when the process dies, so a
    crashed daemon never leaves a stale lock, and two daemons started at the same instant cannot both win
    (the heartbeat check they used before could not tell them apart). The folder lock is the one that counts
    where the OS has it: ``daemon.lock`` is a file anyone who can write the spool may delete, after which a
    second daemon would lock a new one; the folder cannot be swapped under a held descriptor, and
    :meth:`still_ours` tells when the path no longer names the locked folder.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self.fd: int | None = None
        self.dir_fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False when another process holds it."""
        dir_fd = None
        if os.name != "nt":
            dir_fd = os.open(self.root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
            if not _try_lock(dir_fd):
                os.close(dir_fd)
                return False
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC, 0o600)
        except BaseException:
            if dir_fd is not None:
                os.close(dir_fd)
            raise
        if not _try_lock(fd):
            os.close(fd)
            if dir_fd is not None:
                os.close(dir_fd)
            return False
        with contextlib.suppress(OSError):  # who holds it, for people reading the file
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self.fd, self.dir_fd = fd, dir_fd
        return True

    def still_ours(self) -> bool:
        """False when the spool path no longer names the folder we locked (it was moved away or replaced)."""
        if self.dir_fd is None:
            return True
        try:
            a, b = os.fstat(self.dir_fd), os.stat(self.root)
        except OSError:
            return False
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

    def release(self) -> None:
        for fd in (self.fd, self.dir_fd):
            if fd is not None:
                _unlock(fd)
                os.close(fd)
        self.fd = self.dir_fd = None


def lock_holder(spool: Path) -> bool:
    """True if a live process (an ``aiedit serve``) holds the exclusive lock on ``<spool>/daemon.lock``.

    Probes with a non-blocking lock attempt on a fresh descriptor and releases it at once, so it never holds
    the lock and never waits. False when the spool or the lock file does not exist or cannot be opened (nobody
    can be holding it then). The lock is per open file: called inside the serving daemon itself it also
    answers True. Used by ``aiedit doctor`` to tell a running engine from a stale ``daemon.json``.
    """
    if os.name != "nt" and _held(spool, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)):  # the folder (see SpoolLock)
        return True
    return _held(Path(spool) / LOCK_NAME, os.O_RDWR | _NOFOLLOW)  # the file (Windows, or an older daemon)


def _held(path: Path, flags: int) -> bool:
    try:
        fd = os.open(path, flags | _CLOEXEC)
    except OSError:
        return False
    try:
        if _try_lock(fd):
            _unlock(fd)
            return False
        return True
    finally:
        os.close(fd)


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        with contextlib.suppress(OSError):
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)


def default_spool() -> Path:
    """``$AIEDIT_SPOOL``, else ``~/.aiedit/spool`` (Windows: ``%USERPROFILE%``, read in full Unicode). REAPER's
    scripts derive the same folder whatever the user's name (reaper_scripts/aiedit/fs.lua ``windows_home``; the one
    case where they cannot is ``bridge.commands.doctor.scripts_default_spool``)."""
    return Path(os.environ.get("AIEDIT_SPOOL") or Path.home() / ".aiedit" / "spool")


_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _dumps(obj: Any) -> bytes:
    """JSON as written to the spool; raises ValueError (NaN, inf) before anything touches the disk.

    One line: ``indent`` would switch json to its pure-Python encoder, several times slower on the answering
    path."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False).encode("utf-8")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON via a temporary file beside ``path`` and rename it into place (no fsync: readers need
    atomicity, and a status lost to a power cut is rebuilt as ``failed`` at the next start)."""
    data = _dumps(obj)
    path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)  # 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_small_file(path: Path, limit: int) -> bytes | None:
    """The bytes of a regular file of at most ``limit`` bytes, opened without following a final symlink and
    without blocking (a FIFO dropped in the inbox must not hang the reader); None when it is bigger.
    OSError when it cannot be read or is not a regular file."""
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | _CLOEXEC | getattr(os, "O_BINARY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if st.st_size > limit:
            return None
        chunks, left = [], limit + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 16))):
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        return None if len(data) > limit else data
    finally:
        os.close(fd)


class Spool:
    """Paths and reads/writes of one spool folder; job ids must already be validated (they name folders).

    Everything under ``jobs/`` is written through folders opened without following links (see
    :class:`bridge.jobs.safe_dir.SafeDir`), so a client that can write into the spool cannot redirect the daemon's
    writes.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.inbox = self.root / "inbox"
        self.rejected = self.inbox / "rejected"
        self.jobs = self.root / "jobs"
        self.daemon_file = self.root / "daemon.json"
        self.log_file = self.root / "aiedit.log"

    def create(self) -> None:
        """Make the folders; those made here are 0700 (an existing spool keeps the modes its owner chose)."""
        self.root.parent.mkdir(parents=True, exist_ok=True)
        for d in (self.root, self.inbox, self.rejected, self.jobs):
            with contextlib.suppress(FileExistsError):
                d.mkdir(mode=DIR_MODE)
                os.chmod(d, DIR_MODE)  # whatever the umask

    def job_dir(self, job_id: str) -> Path:
        return self.jobs / job_id

    def takes_dir(self, job_id: str) -> Path:
        return self.jobs / job_id / "takes"

    def job_exists(self, job_id: str) -> bool:
        """Anything at ``jobs/<id>``, a dangling link included."""
        return os.path.lexists(self.job_dir(job_id))

    def create_job(self, job_id: str, raw: dict[str, Any], status: dict[str, Any]) -> None:
        """Make ``jobs/<id>/`` (exclusively: FileExistsError if anything is there) holding job.json and
        status.json; on any failure nothing is left behind."""
        clean = {k: v for k, v in raw.items() if k != "token"}  # never store the shared secret
        job_data, status_data = _dumps(clean), _dumps(status)
        with self._dir("jobs", create=True) as jobs:
            jobs.mkdir(job_id)
            try:
                with jobs.sub(job_id) as d:
                    d.write("job.json", job_data)
                    d.write("status.json", status_data)
            except BaseException:
                jobs.remove_tree(job_id)
                raise

    def write_status(self, status: dict[str, Any]) -> None:
        self.write_status_data(status["id"], _dumps(status))

    def write_status_data(self, job_id: str, data: bytes) -> None:
        """Replace ``jobs/<id>/status.json`` with ``data`` (JSON already encoded by the caller). A folder planted
        under that name is removed first (a rename cannot replace it, and nothing legitimate puts one there)."""
        with self._dir("jobs", job_id, create=True) as d:
            try:
                d.write("status.json", data)
            except IsADirectoryError:
                d.remove_tree("status.json")
                d.write("status.json", data)

    def remove_job(self, job_id: str) -> None:
        """Delete ``jobs/<id>/`` and everything in it (a link there is removed, never followed)."""
        try:
            d = self._dir("jobs")
        except OSError:
            return
        with d:
            d.remove_tree(job_id)

    def prune_rejected(self, cutoff: float) -> int:
        """Delete files in ``inbox/rejected/`` last changed before ``cutoff`` (a time); returns how many."""
        n = 0
        try:
            d = self._dir("inbox", "rejected")
        except OSError:
            return 0
        with d:
            for name in d.listdir():
                with contextlib.suppress(OSError):
                    st = d.lstat(name)
                    if st.st_mtime < cutoff and not stat.S_ISDIR(st.st_mode):
                        d.unlink(name)
                        n += 1
        return n

    def write_job(self, job_id: str, raw: dict[str, Any]) -> None:
        data = _dumps({k: v for k, v in raw.items() if k != "token"})
        with self._dir("jobs", job_id, create=True) as d:
            d.write("job.json", data)

    def read_job(self, job_id: str) -> dict[str, Any]:
        """``job.json`` (a link there is not followed: OSError)."""
        return _read_spool_json(self.job_dir(job_id) / "job.json")

    # -- takes: written hidden, published together just before the final status --------------------------------

    def write_partial_take(self, job_id: str, write: Callable[[Any], None]) -> str:
        """Create ``jobs/<id>/takes/.partial-*.wav`` (0600, no link followed), let ``write(fileobj)`` fill it,
        fsync; returns its name for :meth:`publish_takes`."""
        with self._dir("jobs", job_id, "takes", create=True) as d:
            name = f".partial-{secrets.token_hex(6)}.wav"
            fd = d.create(name)
            try:
                with os.fdopen(fd, "wb") as fh:
                    write(fh)
                    fh.flush()
                    os.fsync(fh.fileno())
            except BaseException:
                with contextlib.suppress(OSError):
                    d.unlink(name)
                raise
            return name

    def publish_takes(self, job_id: str, names: list[tuple[str, str]]) -> None:
        """Rename each (partial, final) pair inside the takes folder."""
        with self._dir("jobs", job_id, "takes") as d:
            for tmp, final in names:
                d.replace(tmp, final)

    def remove_takes(self, job_id: str) -> None:
        """Delete ``jobs/<id>/takes`` (a link there is removed, never followed)."""
        try:
            d = self._dir("jobs", job_id)
        except OSError:
            return
        with d:
            d.remove_tree("takes")

    def _dir(self, *parts: str, create: bool = False) -> SafeDir:
        return SafeDir.open(self.root, *parts, create=create)

    def iter_statuses(self) -> Iterator[tuple[str, dict[str, Any] | None]]:
        """(id, status or None when unreadable) for every job folder."""
        if not self.jobs.is_dir():
            return
        for d in sorted(self.jobs.iterdir()):
            if d.is_symlink() or not d.is_dir():  # a planted link is never read or written through
                continue
            try:
                st = _read_spool_json(d / "status.json")
            except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
                st = None
            yield d.name, st if isinstance(st, dict) else None

    def remove_partials(self) -> int:
        """Delete half-written takes and temporary files left by a killed daemon (hidden ``.partial-*`` and
        ``.tmp-*`` names); return how many. Folders are opened without following links."""
        n = 0
        try:
            names = os.listdir(self.jobs)
        except OSError:
            return 0
        for jid in names:
            for parts in (("jobs", jid), ("jobs", jid, "takes")):
                try:
                    d = self._dir(*parts)
                except OSError:
                    continue
                with d:
                    for name in d.listdir():
                        if name.startswith((".partial-", ".tmp-")):
                            with contextlib.suppress(OSError):
                                d.unlink(name)
                                n += 1
        return n

    def reject(self, path: Path, message: str) -> None:
        """Move an inbox file to ``inbox/rejected/`` with a ``.error.txt`` beside it (nothing is lost)."""
        try:
            inbox = self._dir("inbox")
        except OSError as exc:
            log.warning("cannot open the inbox: %s", exc)
            return
        with inbox:
            try:
                rejected = self._dir("inbox", "rejected", create=True)
            except OSError as exc:
                log.warning("cannot open inbox/rejected/: %s", exc)
                return
            with rejected:
                dest, n = path.name, 1
                while rejected.exists(dest) or rejected.exists(dest + ".error.txt"):
                    n += 1
                    dest = f"{path.stem}-{n}{path.suffix}"
                try:
                    inbox.replace(path.name, dest, rejected)
                except OSError as exc:
                    log.warning("cannot move %s to rejected/: %s", path.name[:100], exc)
                    return
                with contextlib.suppress(OSError):
                    rejected.write(dest + ".error.txt", (message + "\n").encode("utf-8", "replace"))

    def inbox_files(self) -> list[Path]:
        """Messages waiting in the inbox, oldest first; temporary names (``.x``, not ``*.json``) are
        skipped."""
        try:
            files = [p for p in self.inbox.iterdir() if is_message_name(p) and not p.is_dir()]
        except OSError:
            return []
        return sorted(files, key=_mtime_name)

    # -- daemon.json -----------------------------------------------------------------------------------------

    def read_daemon(self) -> dict[str, Any] | None:
        try:
            d = read_json(self.daemon_file)
        except (OSError, ValueError):
            return None
        return d if isinstance(d, dict) else None

    def live_daemon(self) -> dict[str, Any] | None:
        """daemon.json of another daemon that is still serving this spool (fresh heartbeat, pid alive), else
        None."""
        d = self.read_daemon()
        if not d:
            return None
        beat = d.get("heartbeat")
        pid = d.get("pid")
        if not isinstance(beat, int | float) or time.time() - beat > STALE_S or not isinstance(pid, int):
            return None
        if pid == os.getpid():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return d


def _read_spool_json(path: Path) -> Any:
    data = read_small_file(path, 1 << 22)
    if data is None:
        raise ValueError(f"{path.name} is too large")
    return json.loads(data)


def is_message_name(p: Path) -> bool:
    return p.suffix.lower() == ".json" and not p.name.startswith(".")


def _mtime_name(p: Path) -> tuple[float, str]:
    try:
        return p.lstat().st_mtime, p.name
    except OSError:
        return 0.0, p.name


class Heartbeat(threading.Thread):
    """Rewrites daemon.json every 2 s so clients can tell a live daemon from a stale file.

    ``alive`` says whether the answering thread still loops; while it does not, no beat is written, so the
    heartbeat goes stale and clients see the engine as down instead of waiting on a hung port.
    """

    def __init__(
        self, spool: Spool, info: Callable[[], dict[str, Any]], alive: Callable[[], bool] = lambda: True
    ) -> None:
        super().__init__(name="aiedit-heartbeat", daemon=True)
        self.spool, self.info, self.alive = spool, info, alive
        self.stop_event = threading.Event()
        self._warned = False

    def beat(self) -> dict[str, Any] | None:
        if not self.alive():
            if not self._warned:
                log.error("the OSC answering thread is not responding; heartbeat withheld")
            self._warned = True
            return None
        self._warned = False
        d = self.info()
        d["heartbeat"] = time.time()
        try:
            write_json_atomic(self.spool.daemon_file, d)
        except OSError as exc:
            log.warning("cannot write daemon.json: %s", exc)
        return d

    def run(self) -> None:
        while not self.stop_event.wait(HEARTBEAT_S):
            self.beat()

    def stop(self) -> None:
        self.stop_event.set()
        if self.is_alive():
            self.join()  # a beat in progress would otherwise recreate daemon.json after the unlink
        self.spool.daemon_file.unlink(missing_ok=True)


class InboxWatcher:
    """Calls ``handle(path)`` for every message file in the inbox: those present at start, new ones as they
    land.

    ``handle`` returns True when it consumed the file (moved or removed it), False to see it again at the next
    scan (e.g. JSON still being written). Calls are serialised on one thread, in arrival order.
    """

    def __init__(self, spool: Spool, handle: Callable[[Path], bool], rescan_s: float = 1.0) -> None:
        self.spool, self.handle, self.rescan_s = spool, handle, rescan_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._observer: Any = None
        self._thread = threading.Thread(target=self._run, name="aiedit-inbox", daemon=True)

    def start(self) -> None:
        self.spool.inbox.mkdir(parents=True, exist_ok=True)
        try:
            observer = Observer()
            observer.schedule(_Wake(self._wake), str(self.spool.inbox), recursive=False)
            observer.daemon = True
            observer.start()
            self._observer = observer
        except Exception as exc:  # an unusual filesystem: the periodic scan still works
            log.warning("inbox watching unavailable (%s); scanning every %.0f s", exc, self.rescan_s)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            with contextlib.suppress(RuntimeError):
                self._observer.join(timeout=2)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            for path in self.spool.inbox_files():
                if self._stop.is_set():
                    return
                try:
                    self.handle(path)
                except Exception:  # a bug must not stop the inbox
                    log.exception("inbox: unexpected error handling %s", path.name)
                    with contextlib.suppress(Exception):
                        self.spool.reject(path, "internal error while reading this file (see aiedit.log)")
            self._wake.wait(self.rescan_s)


class _Wake(FileSystemEventHandler):
    def __init__(self, wake: threading.Event) -> None:
        self.wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("created", "moved", "closed", "modified"):
            self.wake.set()
