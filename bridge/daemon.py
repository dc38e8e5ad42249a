"""``aiedit serve``: wires the spool, the service, the OSC front end, the inbox watcher and the worker
together.

Threads: main (waits for a stop signal, then shuts down in order), OSC (answers requests), inbox (spool
files), heartbeat (daemon.json every 2 s), one worker per device (the model and the edits; see
:mod:`bridge.workers.pool`) or, with ``--ray``, one per Ray actor (:mod:`bridge.workers.remote`). Only local
workers ever import torch.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import signal
import stat
import sys
import threading
import time
from dataclasses import dataclass, field
from logging.handlers import RotatingFileHandler
from typing import IO

from bridge.jobs.limits import MAX_QUEUED, Limits
from bridge.jobs.protocol import PathMap, is_loopback
from bridge.jobs.retention import KEEP_DAYS
from bridge.jobs.service import Service
from bridge.jobs.spool import Heartbeat, InboxWatcher, Spool, SpoolLock, default_spool
from bridge.jobs.table import MAX_HISTORY
from bridge.wire.secret import token_problem
from bridge.wire.server import OscFrontend
from bridge.workers.local import Worker
from bridge.workers.pool import DeviceError, Pool, parse_devices, worker_names
from bridge.workers.shared_cache import SharedCache
from engine.cache_files import CacheFiles
from engine.memory import default_max_job_mb

log = logging.getLogger("aiedit.daemon")

STOP_WAIT_S = 10.0  # how long a stop waits for the running job to notice its cancel token
STOP_REASON = "the engine was stopped during this job"
PRUNE_EVERY_S = 3600.0  # finished jobs older than --keep-days are removed at start and then hourly


@dataclass
class ServeConfig:
    model: str = "auto"
    host: str = "127.0.0.1"
    port: int = 9050
    spool: str | None = None
    preload: bool = False
    token: str | None = None
    map_path: list[str] = field(default_factory=list)
    device: str | None = None
    devices: str | None = None  # "cuda:0,cuda:1" | "all" | "cpu,cpu": one worker each (see bridge.workers.pool)
    ray: str | None = None  # a Ray cluster address, or "local": the workers are Ray actors (bridge.workers.remote)
    cache_dir: str | None = None
    cache_max_mb: float | None = None  # the disk stage cache's cap (engine.cache_files; None: from the free space)
    precision: str = "auto"
    compile: bool = False
    threads: int | None = None
    verbose: bool = False
    max_seconds: float = 120.0
    max_channels: int = 8
    max_output_mb: float = 1024.0
    max_job_mb: float | None = None  # None: engine.memory.default_max_job_mb()
    max_queued: int = MAX_QUEUED
    keep_days: float = KEEP_DAYS
    max_history: int = MAX_HISTORY
    max_models: int | None = None  # models each worker keeps loaded (None: from its free memory; bridge.workers.loaded)


class StartupError(Exception):
    """A configuration problem that stops ``aiedit serve`` before it serves (one line for the console)."""


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_NL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str, keep_newlines: bool = False) -> str:
    """Control characters as ``\\xNN`` escapes: client text (a path, a prompt) must not drive the terminal that
    shows the console or the log (``ESC [2J`` clears it, others retitle or remap it)."""
    pattern = _CONTROL if keep_newlines else _CONTROL_NL
    return pattern.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                       else f"\\u{ord(m.group()):04x}", text)


class LogGuard(logging.Filter):
    """Keeps hostile traffic from flooding the log: each line is cut to :data:`MAX_LINE` characters, and each
    kind of line (logger + message template) passes at :data:`RATE` per second after a burst of
    :data:`BURST`; the next line that passes says how many were dropped. Control characters are escaped."""

    MAX_LINE = 500
    BURST = 20
    RATE = 5.0

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], tuple[float, float, int]] = {}  # key -> (tokens, time, dropped)

    def filter(self, record: logging.LogRecord) -> bool:
        decided = getattr(record, "_aiedit_guard", None)  # one decision per record, for every handler
        if decided is not None:
            return bool(decided)
        ok = self._decide(record)
        record._aiedit_guard = ok
        return ok

    def _decide(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg)[:100])
        now = time.monotonic()
        with self._lock:
            tokens, last, dropped = self._buckets.get(key, (float(self.BURST), now, 0))
            tokens = min(float(self.BURST), tokens + (now - last) * self.RATE)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now, dropped + 1)
                return False
            if len(self._buckets) > 1000:  # many distinct templates: forget the oldest state
                self._buckets.clear()
            self._buckets[key] = (tokens - 1.0, now, 0)
        text = record.getMessage()
        if len(text) > self.MAX_LINE:
            text = f"{text[: self.MAX_LINE]}... ({len(text)} characters)"
        if dropped:
            text += f" [{dropped} similar line(s) dropped]"
        if record.levelno < logging.ERROR:
            text = text.replace("\n", " | ")
        record.msg, record.args = escape_controls(text, keep_newlines=record.levelno >= logging.ERROR), None
        return True


def setup_logging(spool: Spool, verbose: bool) -> None:
    root = logging.getLogger("aiedit")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for h in list(root.handlers):
        root.removeHandler(h)
    guard = LogGuard()  # on the handlers: a logger's own filter would not see its children's records
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    console.addFilter(guard)
    root.addHandler(console)
    try:
        fh = PrivateLogHandler(spool.log_file, maxBytes=2_000_000, backupCount=3, encoding="utf-8")
        fh.setFormatter(fmt)
        fh.addFilter(guard)
        root.addHandler(fh)
    except OSError as exc:
        root.warning("cannot write %s: %s", spool.log_file, exc)


class PrivateLogHandler(RotatingFileHandler):
    """``aiedit.log``, opened without following a link (one planted there is removed, never followed or
    chmod-ed), only as a regular file, and made 0600 through its descriptor."""

    def _open(self) -> IO[str]:
        flags = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
                 | getattr(os, "O_NONBLOCK", 0))  # O_NONBLOCK: a FIFO planted there fails instead of blocking
        try:
            fd = os.open(self.baseFilename, flags, 0o600)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.EMLINK):
                raise
            os.unlink(self.baseFilename)  # a link in our own spool: removed, not followed
            fd = os.open(self.baseFilename, flags | os.O_EXCL, 0o600)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file", self.baseFilename)
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o600)
        except BaseException:
            os.close(fd)
            raise
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


class Daemon:
    def __init__(self, cfg: ServeConfig) -> None:
        if not is_loopback(cfg.host) and not cfg.token:
            raise StartupError(
                f"refusing to listen on {cfg.host}: a non-loopback address needs a token (--token-file FILE or "
                "$AIEDIT_TOKEN; anyone on the network could otherwise send jobs)"
            )
        if cfg.token is not None and (problem := token_problem(cfg.token)):
            raise StartupError(problem)
        if cfg.max_queued < 1 or cfg.keep_days < 0 or cfg.max_history < 1:
            raise StartupError("--max-queued and --max-history must be at least 1 and --keep-days at least 0 (0: "
                               "keep every job)")
        if cfg.max_job_mb is not None and not cfg.max_job_mb > 0:
            raise StartupError("--max-job-mb must be more than 0")
        if cfg.max_models is not None and cfg.max_models < 1:
            raise StartupError("--max-models must be at least 1 (or left out: as many as the free memory holds)")
        try:
            path_map = PathMap.parse(cfg.map_path)
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        self.cfg = cfg
        self.spool = Spool(cfg.spool or default_spool())
        try:
            self.spool.create()
        except OSError as exc:
            raise StartupError(f"cannot create the spool folder {self.spool.root}: {exc}") from None
        self.lock = SpoolLock(self.spool.root)
        try:
            locked = self.lock.acquire()
        except OSError as exc:
            raise StartupError(f"cannot lock {self.lock.path}: {exc.strerror or exc}") from None
        if not locked:
            other = self.spool.read_daemon() or {}
            raise StartupError(
                f"another aiedit daemon (pid {other.get('pid', '?')}, port {other.get('port', '?')}) holds "
                f"{self.lock.path}; stop it or use another --spool"
            )
        setup_logging(self.spool, cfg.verbose)
        try:
            self.osc = OscFrontend(cfg.host, cfg.port)
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}"
                + (" (is another aiedit serve running?)" if _in_use(exc) else "")
            ) from None
        self.service = Service(
            self.spool,
            model=cfg.model,
            send=self.osc.send,
            token=cfg.token,
            path_map=path_map,
            host=cfg.host,
            port=self.osc.port,
            limits=Limits(cfg.max_seconds, cfg.max_channels, cfg.max_output_mb,
                          max_job_mb=cfg.max_job_mb if cfg.max_job_mb is not None else default_max_job_mb(),
                          device=_stage_device(cfg)),
            max_queued=cfg.max_queued,
            keep_days=cfg.keep_days,
            max_history=cfg.max_history,
        )
        self.osc.attach(self.service)
        self.pool = Pool()
        self.service.workers_info = self.pool.info
        self.service.loaded_models = self.pool.loaded
        self.shared_cache = SharedCache()
        self.exit_code = 0
        self._ray_thread: threading.Thread | None = None
        self._ray_release = threading.Event()  # set by stop() once the workers are done with Ray
        try:
            if cfg.ray:
                from bridge.workers import remote

                remote.check_installed()  # at once; joining the cluster waits until the port answers (start)
                self.workers: list[threading.Thread] = []
                self._ray_thread = threading.Thread(target=self._join_ray, name="aiedit-ray", daemon=True)
            else:
                self.workers = list(self._local_workers(cfg))
        except (StartupError, ImportError) as exc:
            self.osc.server.server_close()  # not serving yet: shutdown() would wait for serve_forever forever
            self.lock.release()
            if isinstance(exc, ImportError):
                raise StartupError(str(exc)) from None
            raise
        self.heartbeat = Heartbeat(self.spool, self.service.daemon_info, self.osc.answering)
        self.inbox = InboxWatcher(self.spool, self.service.handle_inbox_file, end_scan=self.service.inbox_scanned)
        self.service.table.on_room.append(self.inbox.wake_room)  # files waiting for room are looked at once
        self.stop_event = threading.Event()
        self._osc_thread = threading.Thread(target=self.osc.serve_forever, name="aiedit-osc", daemon=True)

    def _local_workers(self, cfg: ServeConfig) -> list[Worker]:
        try:
            devices = parse_devices(cfg.devices, cfg.device)
        except DeviceError as exc:
            raise StartupError(str(exc)) from None
        from engine.devices import resolve_device
        from engine.errors import InputError

        for device in {d for d in devices if d not in (None, "cpu", "auto")}:  # a named GPU must be here: one line
            try:
                resolve_device(device)
            except InputError as exc:
                raise StartupError(str(exc)) from None
        cache_dir = cfg.cache_dir
        if cache_dir is None and len(devices) > 1:
            # several workers share the LoRA stage results through the disk (a re-take on another worker then
            # skips stages 1-2): a private folder of this daemon's (bridge.workers.shared_cache), or none when the
            # temporary folder cannot hold one
            cache_dir = self.shared_cache.create()
        if cache_dir is not None:
            cache_mb = cfg.cache_max_mb
            CacheFiles(cache_dir, None if cache_mb is None else int(cache_mb * 1e6)).sweep()
        return [Worker(self.service, cfg.model, device=device, cache_dir=cache_dir, preload=cfg.preload,
                       threads=cfg.threads, precision=cfg.precision, compile_unet=cfg.compile, pool=self.pool,
                       slot=self.pool.add(name), max_models=cfg.max_models, cache_max_mb=cfg.cache_max_mb)
                for device, name in zip(devices, worker_names(devices), strict=True)]

    def _join_ray(self) -> None:
        """Join the cluster and start one worker per actor, on a thread: ``ray.init`` takes seconds (a ``local``
        instance 10 s and more), and the daemon answers ping meanwhile (jobs queue). A cluster that cannot be
        joined stops the daemon with one line, as a start-up error would."""
        from bridge.workers import remote

        cfg = self.cfg
        ray = None
        # ray.init has no deadline of its own (a port that answers but is not Ray held it for ever, jobs queued
        # meanwhile): past JOIN_S the daemon stops with one line. A timer, as ray.init must run on this thread
        # (see the end of this method); the thread left in it is a daemon thread and ends with the process.
        ended = _Once()  # the join ends once: joined, failed, or past its deadline
        timer = None
        if (cfg.ray or "local") != "local":
            timer = threading.Timer(remote.JOIN_S, self._ray_join_timeout, args=(ended,))
            timer.daemon = True
            timer.start()
        try:
            ray = remote.connect(cfg.ray or "local")
            kinds = remote.actor_kinds(ray, cfg.devices)
        except remote.RayUnavailable as exc:
            if ended.claim():
                self._ray_failed(str(exc))
            if ray is not None:
                ray.shutdown()
            return
        finally:
            if timer is not None:
                timer.cancel()
        if not ended.claim():  # the deadline passed just as ray.init returned: the daemon is stopping
            ray.shutdown()
            return
        for i, kind in enumerate(kinds):
            if self.service.closed.is_set():
                return
            w = remote.RemoteWorker(self.service, self.pool, self.pool.add(f"ray:{i}"), ray, kind, i,
                                    cache_dir=cfg.cache_dir, precision=cfg.precision, compile_unet=cfg.compile,
                                    max_models=cfg.max_models, cache_max_mb=cfg.cache_max_mb)
            self.workers.append(w)
            w.start()
        log.info("joined the Ray cluster at %s: %d actor(s) (%s)", cfg.ray, len(kinds), ", ".join(kinds))
        # This thread stays until the workers have stopped: a "local" instance's processes were started from it
        # with PR_SET_PDEATHSIG (ray._private.utils), which kills them when the *thread* that forked them ends.
        self._ray_release.wait()
        ray.shutdown()  # the actors belong to this driver: Ray ends them (and a "local" instance) with it

    def _ray_join_timeout(self, ended: _Once) -> None:
        from bridge.workers import remote

        if ended.claim():
            self._ray_failed(f"cannot join the Ray cluster at {self.cfg.ray!r}: no answer within "
                             f"{remote.JOIN_S:.0f} s (is it a Ray head node, and its version this one?)")

    def _ray_failed(self, message: str) -> None:
        """A cluster that cannot be joined stops the daemon with one line, as a start-up error would."""
        print(f"aiedit serve: {message}", file=sys.stderr)
        log.error("%s", message)
        self.exit_code = 2
        self.stop_event.set()

    def start(self) -> None:
        self.service.recover()
        self.osc.alive_at = time.monotonic()  # a long recover is not a hung answering thread
        self._osc_thread.start()
        self.heartbeat.beat()  # daemon.json appears once the port answers
        self.heartbeat.start()
        for w in self.workers:
            w.start()
        if self._ray_thread is not None:
            self._ray_thread.start()
        self.inbox.start()
        log.info(
            "aiedit serving model %s (%d model(s) on disk) on %s:%d, spool %s, %d worker(s)%s",
            self.service.models.label,
            len(self.service.models.models),
            self.cfg.host,
            self.osc.port,
            self.spool.root,
            len(self.workers),
            f", joining Ray at {self.cfg.ray}" if self.cfg.ray else "",
        )

    def stop(self) -> None:
        """Stop in order: no new work, cancel the running job, keep queued ones, remove daemon.json."""
        log.info("stopping")
        self.inbox.stop()
        running = self.service.stop_running(STOP_REASON)
        deadline = time.monotonic() + STOP_WAIT_S
        for w in self.workers:
            w.join(timeout=max(0.0, deadline - time.monotonic()))
        if running and any(w.is_alive() for w in self.workers):
            log.warning("job(s) %s did not stop within %.0f s; marking them cancelled", ", ".join(running),
                        STOP_WAIT_S)
            self.service.abandon_running(STOP_REASON)
        if self._ray_thread is not None:
            self._ray_release.set()
            self._ray_thread.join(timeout=STOP_WAIT_S)  # it shuts Ray down (unless ray.init is still under way)
        self.shared_cache.remove()
        self.service.maintain()  # a last try at statuses a spool fault left unwritten
        self.osc.close()
        self.heartbeat.stop()
        self.lock.release()
        log.info("stopped")

    def serve(self) -> int:
        """Run until SIGINT/SIGTERM (or :meth:`request_stop`)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop_event.set())
        self.start()
        next_prune = 0.0  # at start (after the port answers), then hourly
        while not self.stop_event.wait(0.5):
            self.service.maintain()
            if not self.lock.still_ours():
                log.error("the spool folder %s was replaced or removed while serving; stopping", self.spool.root)
                break
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_EVERY_S
                self.service.prune()
        self.stop()
        return self.exit_code

    def request_stop(self) -> None:
        self.stop_event.set()


class _Once:
    """True for the first :meth:`claim` only, whichever thread makes it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claimed = False

    def claim(self) -> bool:
        with self._lock:
            first, self._claimed = not self._claimed, True
            return first


def _stage_device(cfg: ServeConfig) -> str:
    """Where the stages of an edit run, for the memory limit: ``cuda`` when every worker is on a CUDA GPU (their
    working memory is then the GPU's), else ``cpu`` (the host holds it; an Apple GPU shares the host's memory).
    Unset (``auto``): ``cuda`` when an NVIDIA driver is present, told without importing torch."""
    kinds = [d.strip() for d in (cfg.devices or cfg.device or "").split(",") if d.strip() and d.strip() != "auto"]
    if cfg.ray and not cfg.devices:
        return "cuda"  # one actor per GPU of the cluster
    if not kinds:
        return "cuda" if _nvidia_driver() else "cpu"
    return "cuda" if all(k == "all" or k.startswith("cuda") for k in kinds) else "cpu"


def _nvidia_driver() -> bool:
    return any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl")) or (
        os.name == "nt" and shutil.which("nvidia-smi") is not None)


def _in_use(exc: OSError) -> bool:
    import errno

    return exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1))


def serve(cfg: ServeConfig) -> int:
    try:
        daemon = Daemon(cfg)
    except StartupError as exc:
        print(f"aiedit serve: {escape_controls(str(exc))}", file=sys.stderr)
        return 2
    quiet_stdout()
    return daemon.serve()


def quiet_stdout() -> None:
    """Point file descriptor 1 at the null device. The daemon says nothing on stdout (its log goes to stderr and
    aiedit.log), but libsndfile prints parser diagnostics there for some malformed files, so a hostile source
    could otherwise flood whatever captures the daemon's output."""
    try:
        sys.stdout.flush()
        null = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError):
        return
    try:
        os.dup2(null, 1)
    finally:
        os.close(null)
