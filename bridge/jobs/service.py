"""The daemon's core: accepts, queues, cancels and reports jobs for every transport (OSC and the spool inbox).

One lock guards the job table; every state change is written to ``jobs/<id>/status.json`` before the matching
event goes out, so a client that reads the file after an event never sees an older state. Nothing here imports
torch: the answering path must stay fast while the worker thread computes.

Durability (decided here, documented in docs/architecture.md): at start, ``queued`` jobs are queued again in
their original order; ``running`` jobs become ``failed`` ("the engine stopped during this job") instead of
being re-run,
because a job that killed the engine (out of memory, a crash) would kill it again in a loop. Clients re-send.
A status that could not be written (a full or read-only spool) stays marked dirty and is written again by
:meth:`Service.maintain` until it is, so the disk catches up with the events.

Cost of a status answer (issue 20): the running set, the queue (in run order) and the finished jobs (in the order
they ended) are kept as indexes updated at each state change, and each status's JSON text is kept from its last
write, so an answer costs O(what it lists), never O(history).
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.jobs.protocol import (
    REPLY_HOST_MSG,
    STATES,
    STATES_FINAL,
    VERSION,
    CancelRequest,
    Job,
    PathMap,
    ProtocolError,
    ReplyTo,
    cancel_from_object,
    check_source,
    decode_json,
    new_status,
    parse_job,
    parse_reply,
    probe_source,
    refused_status,
    reply_allowed,
    reply_family_error,
    token_ok,
    valid_id,
)
from bridge.jobs.queue import JobQueue
from bridge.jobs.spool import SETTLE_S, Spool, read_small_file
from bridge.wire.throttle import Buckets
from engine.audio_io import region_frames
from engine.errors import InputError
from engine.params import Region
from engine.progress import CancelToken

log = logging.getLogger("aiedit.service")

SendFn = Callable[[ReplyTo, str, list[Any]], None]
RECENT_FINISHED = 50  # finished jobs in a status answer (the newest, or the next page after ``since``)
QUEUED_SHOWN = 50  # queued jobs listed in one answer, in at most half of it (the total is always given)
ANSWER_BYTES = 64_000  # a status answer fits one UDP datagram
INBOX_MAX_BYTES = 1 << 20
STOPPED_MSG = "the engine stopped during this job"
MAX_QUEUED = 1000
KEEP_DAYS = 14.0
# Refusals of OSC jobs recorded as failed statuses (jobs/<id>/ + memory until --keep-days): a 1 KB datagram must
# not buy a folder at the flood's rate. Over this budget the sender still gets its /aiedit/error, nothing is kept.
# Spool refusals are always recorded (REAPER learns of them only from status.json; the writer pays the disk).
REFUSALS_RECORDED_PER_S, REFUSALS_RECORDED_BURST = 2.0, 200.0


@dataclass(frozen=True)
class Limits:
    """What one job may cost, checked before it is queued (``aiedit serve --max-*``)."""

    max_seconds: float = 120.0
    max_channels: int = 8
    max_output_mb: float = 1024.0

    def check(self, job: Job, sample_rate: int, channels: int, frames: int) -> None:
        """ProtocolError with the numbers when the region or its takes are over a limit."""
        problem = self.problem(sample_rate, channels, frames, len(job.params.etas))
        if problem:
            raise ProtocolError(problem, job.id)

    def problem(self, sample_rate: int, channels: int, frames: int, takes: int) -> str | None:
        """What is over a limit, with the numbers, or None."""
        seconds = frames / sample_rate
        if seconds > self.max_seconds:
            return (f"the region is {seconds:.1f} s long; this engine takes at most {self.max_seconds:g} s "
                    "(aiedit serve --max-seconds)")
        if channels > self.max_channels:
            return (f"the source has {channels} channels; this engine takes at most {self.max_channels} "
                    "(aiedit serve --max-channels)")
        mb = frames * channels * takes * 4 / 1e6  # 32-bit float takes
        if mb > self.max_output_mb:
            return (f"the takes would need about {mb:.0f} MB ({seconds:.1f} s x {channels} ch x {takes} takes at "
                    f"{sample_rate} Hz); at most {self.max_output_mb:g} MB (aiedit serve --max-output-mb)")
        return None


class Service:
    def __init__(
        self,
        spool: Spool,
        *,
        model: str,
        send: SendFn,
        token: str | None = None,
        path_map: PathMap | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: Limits | None = None,
        max_queued: int = MAX_QUEUED,
        keep_days: float = KEEP_DAYS,
    ) -> None:
        self.limits = limits or Limits()
        self.max_queued, self.keep_days = max_queued, keep_days
        self.ip_version = 6 if ":" in host else 4
        self.spool, self.model_spec, self.send = spool, model, send
        self.token, self.path_map = token, path_map or PathMap()
        self.host, self.port = host, port
        self.model_name: str | None = None  # resolved by the worker once loaded
        self.modes: tuple[str, ...] = modes_for_spec(model)  # the selected model's modes; the loaded one's later
        self.started = time.time()
        self.queue = JobQueue()
        self._lock = threading.RLock()
        self._status: dict[str, dict[str, Any]] = {}
        self._taken_lower: set[str] = set()  # ids of _status, lower-cased (ids are unique regardless of case)
        self._jobs: dict[str, Job] = {}  # queued and running jobs
        self._targets: dict[str, list[ReplyTo]] = {}  # who gets a job's events
        self._running: dict[str, CancelToken] = {}  # running job id -> its cancel token (one per busy worker)
        self.workers_info: Callable[[], list[dict[str, Any]]] | None = None  # daemon.json's "workers" (workers.pool)
        self._last_sent: dict[
            str, tuple[str, float, float]
        ] = {}  # id -> (stage, fraction, time) of last event
        self._last_write: dict[str, float] = {}
        # status-answer indexes (see the module doc): JSON text of each status as last written, the finished
        # ones in the order they ended (with a non-decreasing time key, for ``since`` paging), and the statuses
        # whose last write failed; the running jobs are ``_running`` (in start order), the queued ones the queue's
        self._texts: dict[str, str] = {}
        self._done_ids: list[str] = []
        self._done_keys: list[float] = []
        self._dirty: set[str] = set()
        self._refusals = Buckets(REFUSALS_RECORDED_PER_S, REFUSALS_RECORDED_BURST, max_keys=1)
        self._refusals_dropped = False  # logged once per episode
        self._inbox_seen: dict[str, float] = {}  # unparseable inbox files: first seen (monotonic)
        self.closed = threading.Event()

    # -- start-up --------------------------------------------------------------------------------------------

    def recover(self) -> None:
        """Rebuild the job table from the spool: resume ``queued`` jobs, fail ``running`` ones (see module
        doc)."""
        removed = self.spool.remove_partials()
        if removed:
            log.info("removed %d half-written take(s) left by a stopped daemon", removed)
        resume: list[tuple[float, Job, dict[str, Any]]] = []
        finished: list[tuple[float, str]] = []
        for jid, st in self.spool.iter_statuses():
            if not valid_id(jid):
                continue
            try:  # one hostile record (issue 20: nesting, wrong types, huge numbers) must not stop the start
                st, job = self._recover_one(jid, st)
            except Exception as exc:
                log.warning("job %s: unusable record (%s); marked failed", jid, type(exc).__name__)
                st, job = _placeholder(jid, "this job's status file was unreadable"), None
                self._write(st)
            if job is not None:
                resume.append((st["created"], job, st))
            elif st["state"] in STATES_FINAL:
                finished.append((st["updated"], jid))
            self._status[jid] = st
            self._taken_lower.add(jid.lower())
        for _, jid in sorted(finished):
            self._index_done(jid, self._status[jid]["updated"])
        for _, job, _st in sorted(resume, key=lambda r: r[0]):
            self._jobs[job.id] = job
            self._targets[job.id] = [job.reply] if job.reply else []
            self.queue.put(job.id, job.priority, key=job.retake_key)
        if resume:
            log.info("resumed %d queued job(s)", len(resume))

    def _recover_one(self, jid: str, st: dict[str, Any] | None) -> tuple[dict[str, Any], Job | None]:
        """The status to keep for one job folder at start, and its job when it is to be queued again."""
        if not _status_ok(jid, st):
            st = _placeholder(jid, "this job's status file was unreadable")
            self._write(st)
            return st, None
        assert st is not None
        state = st["state"]
        if state == "running":  # takes it may have published before its final status are withdrawn
            self.spool.remove_takes(jid)
            st.update(state="failed", stage="failed", error=STOPPED_MSG, updated=time.time())
            self._write(st)
            log.info("job %s was running when the engine stopped: marked failed", jid)
        elif state == "queued":
            try:
                job = parse_job(self.spool.read_job(jid), path_map=self.path_map)
                self._check_model(job)  # the daemon may have restarted with another --model
                return st, job
            except Exception as exc:  # OSError, ValueError, RecursionError, ProtocolError...
                msg = exc if isinstance(exc, ProtocolError) else "its job.json is missing or unreadable"
                st.update(state="failed", stage="failed", error=f"cannot resume: {msg}", updated=time.time())
                self._write(st)
        return st, None

    # -- answering path (OSC thread, inbox thread) -----------------------------------------------------------

    def submit(self, message: object, sender: ReplyTo | None) -> tuple[str | None, str | None]:
        """Accept a job (JSON text or object) or refuse it with an ``/aiedit/error``.

        Returns (id, None) when accepted, (None, the one-line error) when refused.
        ``sender`` is the OSC sender (default reply address); None for spool files, which get no events unless
        the job names a ``reply``.
        """
        obj: dict[str, Any] | None = None
        jid = ""
        target = sender
        try:
            obj = message if isinstance(message, dict) else decode_json(message)
            jid = obj.get("id") if valid_id(obj.get("id")) else ""
            if not token_ok(self.token, obj.get("token")):
                log.warning("refused job %r from %s: missing or wrong token", jid, sender)
                raise ProtocolError("refused: missing or wrong token", jid, record=False)
            trusted = self.token is not None
            if len(self.queue) >= self.max_queued:  # before any file is read or written: floods stay cheap
                raise ProtocolError(f"busy: {len(self.queue)} jobs are queued, the most this engine takes "
                                    "(aiedit serve --max-queued); send it again later", jid, record=False)
            try:  # refusals from here on may go to the job's reply address, if it is an allowed one
                wanted = parse_reply(obj.get("reply"))
                if (wanted is not None and reply_allowed(wanted, sender, trusted=trusted)
                        and not reply_family_error(wanted, self.ip_version)):
                    target = wanted
            except InputError:
                pass
            job = parse_job(obj, path_map=self.path_map)
            if job.reply is not None and not reply_allowed(job.reply, sender, trusted=trusted):
                raise ProtocolError(REPLY_HOST_MSG, job.id)
            if job.reply is not None and (family := reply_family_error(job.reply, self.ip_version)):
                raise ProtocolError(family, job.id)
            with self._lock:
                if self._taken(job.id):
                    raise ProtocolError(f"job id {job.id!r} is already taken", job.id)
                self._check_model(job)
                info, frames = check_source(job)
                self.limits.check(job, info.sample_rate, info.channels, frames)
                st = new_status(
                    job, model=self.model_name or self.model_spec, client_path=obj["source"]["path"]
                )
                st.update(sample_rate=info.sample_rate, channels=info.channels, frames=frames)
                try:
                    self.spool.create_job(job.id, obj, st)
                except FileExistsError:
                    raise ProtocolError(f"job id {job.id!r} is already taken", job.id, record=False) from None
                except (OSError, ValueError) as exc:
                    log.error("cannot create the folder of job %s: %s", job.id, exc)
                    raise ProtocolError("cannot create the job's folder in the spool (see aiedit.log)", job.id,
                                        record=False) from None
                self._status[job.id] = st
                self._texts[job.id] = _dumps(st)
                self._taken_lower.add(job.id.lower())
                self._jobs[job.id] = job
                self._targets[job.id] = [target] if target else []
                self.queue.put(job.id, job.priority, key=job.retake_key)
                self._emit(job.id, "/aiedit/ack", [job.id])
            log.info(
                "accepted job %s (%s, %d take(s), %s)",
                job.id,
                job.params.mode,
                len(job.params.etas),
                job.priority,
            )
            return job.id, None
        except ProtocolError as exc:
            self._refuse(obj, exc, target, from_spool=sender is None)
            return None, str(exc)
        except Exception as exc:  # a bug in validation: one line for the client, the trace in the log
            log.exception("unexpected error validating job %r", jid)
            err = ProtocolError(f"internal error while checking the job ({type(exc).__name__}); see aiedit.log",
                                jid, record=False)
            self._refuse(obj, err, target, from_spool=sender is None)
            return None, str(err)

    def _refuse(self, obj: dict[str, Any] | None, exc: ProtocolError, target: ReplyTo | None, *,
                from_spool: bool) -> None:
        jid, msg = exc.job_id, str(exc)
        log.info("refused job %r: %s", jid, msg)
        if jid and obj is not None and exc.record:
            with self._lock:
                if not self._taken(jid) and self._may_record_refusal(from_spool):
                    st = refused_status(obj, jid, msg, model=self.model_name or self.model_spec)
                    self._status[jid] = st
                    self._write(st)
                    self._index_done(jid, st["updated"])
                    self._taken_lower.add(jid.lower())
        if target:
            self.send(target, "/aiedit/error", [jid, msg])

    def _may_record_refusal(self, from_spool: bool) -> bool:
        """Within the budget of recorded OSC refusals (see ``REFUSALS_RECORDED_PER_S``); under the lock."""
        if from_spool or self._refusals.take(None):
            self._refusals_dropped = False
            return True
        if not self._refusals_dropped:
            self._refusals_dropped = True
            log.warning("more than %g refused OSC jobs per second: the rest are answered but not recorded",
                        REFUSALS_RECORDED_PER_S)
        return False

    def _taken(self, jid: str) -> bool:
        # case-insensitively: on macOS and Windows "A" and "a" would share one folder
        return jid.lower() in self._taken_lower or self.spool.job_exists(jid)

    def _check_model(self, job: Job) -> None:
        if job.model is not None and job.model not in (self.model_spec, self.model_name):
            asked = job.model if len(job.model) <= 80 else job.model[:77] + "..."
            raise ProtocolError(
                f"this daemon serves model {self.model_name or self.model_spec!r}, the job asks for {asked!r}",
                job.id,
            )
        if job.params.mode not in self.modes:
            raise ProtocolError(
                f"model {self.model_name or self.model_spec!r} cannot run mode {job.params.mode!r}: it runs "
                f"{', '.join(self.modes)}",
                job.id,
            )

    def handle_inbox_file(self, path: Path) -> bool:
        """Consume one inbox file (job or ``"op": "cancel"``); False leaves it for the next scan."""
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
            if len(self._inbox_seen) > 10_000:
                self._inbox_seen.clear()
            seen = now - self._inbox_seen.setdefault(path.name, now)
            if max(age, seen) < SETTLE_S:
                return False
            self._inbox_seen.pop(path.name, None)
            self._reject_file(path, str(exc))
            return True
        self._inbox_seen.pop(path.name, None)
        if obj.get("op") == "cancel":
            self._cancel_file(path, obj)
            return True
        jid = obj.get("id")
        if valid_id(jid):
            with self._lock:
                if jid in self._status and self._accepted_from(jid, obj, time.time() - age):
                    path.unlink(missing_ok=True)  # accepted before a crash, file not yet removed
                    return True
        if len(self.queue) >= self.max_queued:
            return False  # busy: a spool job waits in the inbox for room (no client reads inbox/rejected/ for it)
        accepted, error = self.submit(obj, None)
        if accepted:
            path.unlink(missing_ok=True)
        else:
            self.spool.reject(path, error or "refused")
        return True

    def _reject_file(self, path: Path, msg: str) -> None:
        log.info("rejected inbox file %s: %s", path.name, msg)
        self.spool.reject(path, msg)

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
            created = float(self._status[jid].get("created") or 0)
            same = self.spool.read_job(jid) == {k: v for k, v in obj.items() if k != "token"}
        except (OSError, ValueError, TypeError):
            return False
        return same and mtime <= created

    def cancel(self, req: CancelRequest, sender: ReplyTo | None) -> str | None:
        """Cancel a queued or running job. Returns None on success, else the error (also sent to the
        sender)."""
        if req.reply is not None and (
            problem := REPLY_HOST_MSG if not reply_allowed(req.reply, sender, trusted=self.token is not None)
            else reply_family_error(req.reply, self.ip_version)
        ):
            if sender:
                self.send(sender, "/aiedit/error", [req.id, problem])
            return problem
        target = req.reply or sender
        err: str | None = None
        with self._lock:
            st = self._status.get(req.id)
            if not token_ok(self.token, req.token):
                log.warning("refused cancel of %s from %s: missing or wrong token", req.id, sender)
                err = "refused: missing or wrong token"
            elif st is None:
                err = f"no job with id {req.id!r}"
            elif st["state"] in STATES_FINAL:
                err = f"job {req.id!r} already finished ({st['state']})"
            elif target and target not in self._targets.setdefault(req.id, []):
                self._targets[req.id].append(target)
            if err is None:
                # The worker may already have popped the id but not yet taken the lock (next_job): a job still
                # marked queued is cancelled here either way, and next_job skips anything not queued.
                if st["state"] == "queued":
                    self.queue.remove(req.id)
                    self._finish(req.id, "cancelled", "cancelled by a client")
                elif req.id in self._running:  # the worker running it (local thread or remote actor) polls this
                    self._running[req.id].cancel("cancelled by a client")
                    log.info("cancelling running job %s", req.id)
        if err and target:
            self.send(target, "/aiedit/error", [req.id, err])
        return err

    def status_list(self) -> dict[str, Any]:
        """The status answer as an object (see :meth:`status_text`)."""
        return json.loads(self.status_text())

    def status_text(self, since: float | None = None, budget: int = ANSWER_BYTES) -> str:
        """The ``/aiedit/status`` answer: ``{"jobs": [...], "running": n, "queued": n, "more": bool}``.

        ``jobs`` lists every running job, then queued ones in run order (at most :data:`QUEUED_SHOWN`, in at
        most half of the budget), then
        finished ones: the :data:`RECENT_FINISHED` newest, or with ``since`` the next that many that ended after
        it, oldest first (a client pages on by passing the last one's ``updated``). Whatever would take the
        answer past ``budget`` bytes is left out and ``more`` says so. Costs O(answer), whatever the history.
        """
        with self._lock:
            parts: list[str] = []
            size = 100  # the wrapper and the counts
            more = False

            def add(text: str) -> bool:
                nonlocal size, more
                n = len(text.encode("utf-8")) + 1 if not text.isascii() else len(text) + 1
                if size + n > budget:
                    more = True
                    return False
                parts.append(text)
                size += n
                return True

            for jid in list(self._running):
                if not add(_dumps(self._status[jid])):  # fresh: progress moves between writes
                    break
            queued = self.queue.head(QUEUED_SHOWN)
            full, budget = budget, max(size, budget // 2)  # leave room for the finished jobs
            for jid in queued:
                if jid in self._status and not add(self._text(jid)):
                    break
            budget = full
            n_queued = len(self.queue)
            more = more or n_queued > len(queued)
            if since is None:
                pick = reversed(range(max(0, len(self._done_ids) - RECENT_FINISHED), len(self._done_ids)))
            else:
                first = bisect.bisect_right(self._done_keys, since)
                pick = iter(range(first, min(len(self._done_ids), first + RECENT_FINISHED)))
                more = more or first + RECENT_FINISHED < len(self._done_ids)
            for i in pick:
                jid = self._done_ids[i]
                if jid in self._status and not add(self._text(jid)):
                    break
            return (f'{{"jobs": [{", ".join(parts)}], "running": {len(self._running)}, '
                    f'"queued": {n_queued}, "more": {"true" if more else "false"}}}')

    def _text(self, jid: str) -> str:
        text = self._texts.get(jid)
        if text is None:
            text = self._texts[jid] = _dumps(self._status[jid])
        return text

    def daemon_info(self) -> dict[str, Any]:
        """daemon.json's content (the heartbeat is added by its writer)."""
        return {
            "version": VERSION,
            "pid": os.getpid(),
            "host": self.host,
            "port": self.port,
            "spool": str(self.spool.root),
            "model": self.model_name or self.model_spec,  # what "auto" resolved to, once loaded
            "modes": list(self.modes),  # the edit modes that model runs (docs/protocol.md)
            "started": self.started,
            "heartbeat": time.time(),
            **({"workers": self.workers_info()} if self.workers_info is not None else {}),
        }

    # -- worker side -----------------------------------------------------------------------------------------

    def next_job(self, timeout: float, worker: str | None = None,
                 choose: Callable[[list[tuple[str, str | None]]], str | None] | None = None,
                 ) -> tuple[Job, CancelToken] | None:
        """The next job for ``worker`` (its name goes into the status), picked by ``choose`` (see
        :meth:`bridge.jobs.queue.JobQueue.get`); None when there is none within ``timeout``."""
        jid = self.queue.get(timeout, choose)
        if jid is None:
            return None
        with self._lock:
            job = self._jobs.get(jid)
            if job is None or self._status[jid]["state"] != "queued":
                return None
            token = self._running[jid] = CancelToken()
            st = self._status[jid]
            st.update(state="running", stage="preparing", updated=time.time())
            if worker:
                st["worker"] = worker
            self._write(st)
            return job, token

    def set_worker(self, jid: str, worker: str) -> None:
        """Name the worker of a running job again (a worker on ``--device`` auto learns its device on loading)."""
        with self._lock:
            st = self._status.get(jid)
            if st is not None and st["state"] == "running" and st.get("worker") != worker:
                st.update(worker=worker, updated=time.time())
                self._write(st)

    def requeue(self, jid: str, reason: str) -> bool:
        """Put a running job back at the head of its priority (its remote worker died: it runs again on
        another). False when it already ended, was cancelled meanwhile (the caller then ends it cancelled), or the
        daemon is stopping."""
        with self._lock:
            st = self._status.get(jid)
            if st is None or st["state"] != "running" or jid not in self._jobs or self.closed.is_set():
                return False
            token = self._running.get(jid)
            if token is None or token.cancelled:  # a cancel was answered "done": the caller ends it cancelled
                return False
            self._running.pop(jid, None)
            self._last_sent.pop(jid, None)
            self._last_write.pop(jid, None)
            st.update(state="queued", stage="queued", worker=None, progress=0.0, updated=time.time())
            self._write(st)
            job = self._jobs[jid]
            self.queue.put(jid, job.priority, key=job.retake_key, front=True)
            log.info("job %s queued again: %s", jid, reason)
            return True

    def progress(self, jid: str, stage: str, fraction: float) -> None:
        """Record progress (kept monotone) and send a throttled ``/aiedit/progress``."""
        with self._lock:
            st = self._status.get(jid)
            if st is None or st["state"] != "running":
                return
            fraction = max(float(st["progress"]), min(1.0, max(0.0, fraction)))
            changed = stage != st["stage"]
            st.update(stage=stage, progress=round(fraction, 4), updated=time.time())
            now = time.monotonic()
            if changed or now - self._last_write.get(jid, 0) >= 0.5:
                self._last_write[jid] = now
                self._write(st)
            _, last_frac, last_t = self._last_sent.get(jid, ("", -1.0, 0.0))
            if changed or fraction - last_frac >= 0.01 or (now - last_t >= 0.25 and fraction > last_frac):
                self._last_sent[jid] = (stage, fraction, now)
                self._emit(jid, "/aiedit/progress", [jid, stage, float(st["progress"])])

    def set_model_name(self, name: str, modes: tuple[str, ...] | None = None) -> None:
        self.model_name = name
        if modes:
            self.modes = tuple(modes)

    def finish(self, jid: str, state: str, error: str | None = None, **fields: Any) -> None:
        """End the running job (``done``/``failed``/``cancelled``); ignored if it already ended."""
        with self._lock:
            st = self._status.get(jid)
            if st is None or st["state"] in STATES_FINAL:
                return
            self._finish(jid, state, error, **fields)

    def _finish(self, jid: str, state: str, error: str | None, **fields: Any) -> None:
        st = self._status[jid]
        st.update(fields)
        st.update(state=state, stage=state, error=error, updated=time.time())
        if state == "done":
            st["progress"] = 1.0
        self._write(st)
        self._index_done(jid, st["updated"])
        self._running.pop(jid, None)
        self._jobs.pop(jid, None)
        self._last_sent.pop(jid, None)
        self._last_write.pop(jid, None)
        log.info("job %s %s%s", jid, state, f": {error}" if error else "")
        if state == "done":
            self._emit(jid, "/aiedit/done", [jid, self._texts[jid]])  # the very text written to status.json
        elif state == "failed":
            self._emit(jid, "/aiedit/error", [jid, error or "failed"])
        else:
            self._emit(jid, "/aiedit/cancelled", [jid])
        self._targets.pop(jid, None)

    def check_source_again(self, job: Job, path: str) -> Region:
        """The work limits, checked again on the file the worker is about to read (``path``: its pinned
        descriptor): a source replaced or grown since it was accepted fails the job with the numbers. Returns
        the region that was checked, in exact frames of this file: read that, and a file that grows in place
        after this check cannot make the read (or the edit) larger than what was checked."""
        try:
            info = probe_source(path)
            start, frames = region_frames(info, job.request.region)
        except InputError as exc:
            raise InputError(f"the source changed after the job was accepted: {exc}") from None
        self.check_output(job, info.sample_rate, info.channels, frames)
        return Region(start / info.sample_rate, frames / info.sample_rate)

    def check_output(self, job: Job, sample_rate: int, channels: int, frames: int) -> None:
        """InputError when audio of this shape is over a work limit (before a take is written)."""
        problem = self.limits.problem(sample_rate, channels, frames, len(job.params.etas))
        if problem:
            raise InputError(f"the source changed after the job was accepted: {problem}")

    def is_current(self, jid: str) -> bool:
        with self._lock:
            return jid in self._running

    # -- shutdown --------------------------------------------------------------------------------------------

    def stop_running(self, reason: str) -> list[str]:
        """Ask every running job to stop (daemon shutdown); queued jobs stay queued. Returns their ids."""
        with self._lock:
            self.queue.close()
            self.closed.set()
            for token in self._running.values():
                token.cancel(reason)
            return list(self._running)

    def abandon_running(self, reason: str) -> None:
        """Mark jobs the workers did not stop in time as cancelled (the process is about to exit)."""
        with self._lock:
            for jid in list(self._running):
                self._finish(jid, "cancelled", reason)

    # -- maintenance (the daemon's main loop) ------------------------------------------------------------------

    def maintain(self) -> None:
        """Write again the statuses whose last write failed (a full or read-only spool that recovered)."""
        if not self._dirty:
            return
        with self._lock:
            for jid in list(self._dirty):
                st = self._status.get(jid)
                if st is None:
                    self._dirty.discard(jid)
                else:
                    self._write(st)
            if not self._dirty:
                log.info("the spool is writable again: every status is up to date")

    def prune(self) -> int:
        """Delete the folders of jobs that finished more than ``keep_days`` ago (0: keep everything); returns
        how many. Memory is updated under the lock, the folders are removed outside it."""
        cutoff = self._cutoff()
        if cutoff is None:
            return 0
        with self._lock:
            old = [jid for jid, st in self._status.items()
                   if st["state"] in STATES_FINAL and st["updated"] < cutoff and jid not in self._dirty]
            for jid in old:
                self._forget(jid)
            if old:
                keep = [i for i, j in enumerate(self._done_ids) if j in self._status]
                self._done_ids = [self._done_ids[i] for i in keep]
                self._done_keys = [self._done_keys[i] for i in keep]
        self._remove_folders(old)
        n = self.spool.prune_rejected(cutoff)
        if n:
            log.info("removed %d rejected inbox file(s) older than %g days", n, self.keep_days)
        return len(old)

    def _cutoff(self) -> float | None:
        return time.time() - self.keep_days * 86400.0 if self.keep_days > 0 else None

    def _forget(self, jid: str) -> None:
        self._status.pop(jid, None)
        self._texts.pop(jid, None)
        self._taken_lower.discard(jid.lower())

    def _remove_folders(self, ids: list[str]) -> None:
        for jid in ids:
            self.spool.remove_job(jid)
        if ids:
            log.info("removed %d finished job(s) older than %g days (aiedit serve --keep-days)", len(ids),
                     self.keep_days)

    # -- helpers ---------------------------------------------------------------------------------------------

    def _write(self, st: dict[str, Any]) -> None:
        """Write ``st`` to its status.json and update the answer indexes. Never raises: a non-finite number
        becomes null (JSON cannot hold it), and a failed write leaves the status dirty for :meth:`maintain`."""
        jid = st["id"]
        try:
            text = _dumps(st)
        except ValueError:
            log.error("status of %s held a non-finite number; written as null", jid)
            _null_non_finite(st)
            text = _dumps(st)
        self._texts[jid] = text
        try:
            self.spool.write_status_data(jid, text.encode("utf-8"))
            self._dirty.discard(jid)
        except (OSError, ValueError) as exc:
            if jid not in self._dirty:
                log.error("cannot write status of %s (will retry): %s", jid, exc)
            self._dirty.add(jid)

    def _index_done(self, jid: str, updated: float) -> None:
        key = max(float(updated), self._done_keys[-1]) if self._done_keys else float(updated)
        self._done_ids.append(jid)
        self._done_keys.append(key)

    def _emit(self, jid: str, address: str, args: list[Any]) -> None:
        for target in self._targets.get(jid, []):
            self.send(target, address, args)


def _dumps(st: dict[str, Any]) -> str:
    return json.dumps(st, ensure_ascii=False, allow_nan=False)


def _null_non_finite(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None, in place for dicts and lists."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        for k, v in obj.items():
            obj[k] = _null_non_finite(v)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            obj[i] = _null_non_finite(v)
    return obj


def _real(x: object) -> bool:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def _status_ok(jid: str, st: object) -> bool:
    """Whether a status read from disk has the shape the daemon relies on (a hostile or damaged file may not)."""
    if not isinstance(st, dict) or st.get("id") != jid or st.get("state") not in STATES:
        return False
    if not all(_real(st.get(k)) for k in ("created", "updated", "progress")):
        return False
    if not isinstance(st.get("stage"), str) or not isinstance(st.get("takes", []), list):
        return False
    for k in ("created", "updated", "progress"):
        st[k] = float(st[k])
    return True


def modes_for_spec(spec: str) -> tuple[str, ...]:
    """The edit modes the model a daemon was started with runs, known without loading it (no torch): by the
    family its name, folder or ``auto`` choice resolves to. Every mode when that cannot be told yet (the worker
    replaces the answer with the loaded model's own once it is loaded)."""
    from engine.params import MODES

    try:
        from engine.models.catalog import modes_of_family
        from engine.models.registry import resolve

        return modes_of_family(resolve(spec).family)
    except Exception:  # an unknown or missing model fails later, with its own message, when the worker loads it
        return MODES


def _placeholder(jid: str, error: str) -> dict[str, Any]:
    now = time.time()
    return {
        "version": VERSION,
        "id": jid,
        "label": None,
        "state": "failed",
        "stage": "failed",
        "progress": 0.0,
        "error": error,
        "priority": "interactive",
        "prompt": None,
        "mode": None,
        "model": None,
        "seed": None,
        "source": {"path": None, "start": 0.0, "length": None},
        "sample_rate": None,
        "channels": None,
        "frames": None,
        "takes": [],
        "best": None,
        "created": now,
        "updated": now,
    }
