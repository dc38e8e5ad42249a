"""The daemon's core: accepts, queues, cancels and reports jobs for every transport (OSC and the spool inbox).

One lock guards the job table; every state change is written to ``jobs/<id>/status.json`` before the matching
event goes out, so a client that reads the file after an event never sees an older state. Nothing here imports
torch: the answering path must stay fast while the worker thread computes.

Durability (decided here, documented in docs/architecture.md): at start, ``queued`` jobs are queued again in
their original order; ``running`` jobs become ``failed`` ("the engine stopped during this job") instead of
being re-run,
because a job that killed the engine (out of memory, a crash) would kill it again in a loop. Clients re-send.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.protocol import (
    REPLY_HOST_MSG,
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
    refused_status,
    reply_allowed,
    token_ok,
    valid_id,
)
from bridge.queue import JobQueue
from bridge.spool import SETTLE_S, Spool, read_small_file
from engine.errors import InputError
from engine.progress import CancelToken

log = logging.getLogger("aiedit.service")

SendFn = Callable[[ReplyTo, str, list[Any]], None]
RECENT_FINISHED = 50
INBOX_MAX_BYTES = 1 << 20
STOPPED_MSG = "the engine stopped during this job"


@dataclass(frozen=True)
class Limits:
    """What one job may cost, checked before it is queued (``aiedit serve --max-*``)."""

    max_seconds: float = 120.0
    max_channels: int = 8
    max_output_mb: float = 1024.0

    def check(self, job: Job, sample_rate: int, channels: int, frames: int) -> None:
        """ProtocolError with the numbers when the region or its takes are over a limit."""
        seconds = frames / sample_rate
        takes = len(job.params.etas)
        if seconds > self.max_seconds:
            raise ProtocolError(f"the region is {seconds:.1f} s long; this engine takes at most "
                                f"{self.max_seconds:g} s (aiedit serve --max-seconds)", job.id)
        if channels > self.max_channels:
            raise ProtocolError(f"the source has {channels} channels; this engine takes at most "
                                f"{self.max_channels} (aiedit serve --max-channels)", job.id)
        mb = frames * channels * takes * 4 / 1e6  # 32-bit float takes
        if mb > self.max_output_mb:
            raise ProtocolError(f"the takes would need about {mb:.0f} MB ({seconds:.1f} s x {channels} ch x "
                                f"{takes} takes at {sample_rate} Hz); at most {self.max_output_mb:g} MB "
                                f"(aiedit serve --max-output-mb)", job.id)


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
    ) -> None:
        self.limits = limits or Limits()
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
        self._running: str | None = None
        self._cancel: CancelToken | None = None
        self._last_sent: dict[
            str, tuple[str, float, float]
        ] = {}  # id -> (stage, fraction, time) of last event
        self._last_write: dict[str, float] = {}
        self.closed = threading.Event()

    # -- start-up --------------------------------------------------------------------------------------------

    def recover(self) -> None:
        """Rebuild the job table from the spool: resume ``queued`` jobs, fail ``running`` ones (see module
        doc)."""
        removed = self.spool.remove_partials()
        if removed:
            log.info("removed %d half-written take(s) left by a stopped daemon", removed)
        resume: list[tuple[float, Job, dict[str, Any]]] = []
        for jid, st in self.spool.iter_statuses():
            if not valid_id(jid):
                continue
            if st is None or st.get("id") != jid:
                st = _placeholder(jid, "this job's status file was unreadable")
                self._write(st)
            state = st.get("state")
            if state == "running":  # takes it may have published before its final status are withdrawn
                self.spool.remove_takes(jid)
                st.update(state="failed", stage="failed", error=STOPPED_MSG, updated=time.time())
                self._write(st)
                log.info("job %s was running when the engine stopped: marked failed", jid)
            elif state == "queued":
                try:
                    job = parse_job(self.spool.read_job(jid), path_map=self.path_map)
                    self._check_model(job)  # the daemon may have restarted with another --model
                    resume.append((float(st.get("created") or 0), job, st))
                except (OSError, ValueError, ProtocolError) as exc:
                    msg = exc if isinstance(exc, ProtocolError) else "its job.json is missing or unreadable"
                    st.update(
                        state="failed", stage="failed", error=f"cannot resume: {msg}", updated=time.time()
                    )
                    self._write(st)
            self._status[jid] = st
            self._taken_lower.add(jid.lower())
        for _, job, _st in sorted(resume, key=lambda r: r[0]):
            self._jobs[job.id] = job
            self._targets[job.id] = [job.reply] if job.reply else []
            self.queue.put(job.id, job.priority)
        if resume:
            log.info("resumed %d queued job(s)", len(resume))

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
            try:  # refusals from here on may go to the job's reply address, if it is an allowed one
                wanted = parse_reply(obj.get("reply"))
                if wanted is not None and reply_allowed(wanted, sender, trusted=trusted):
                    target = wanted
            except InputError:
                pass
            job = parse_job(obj, path_map=self.path_map)
            if job.reply is not None and not reply_allowed(job.reply, sender, trusted=trusted):
                raise ProtocolError(REPLY_HOST_MSG, job.id)
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
                self._taken_lower.add(job.id.lower())
                self._jobs[job.id] = job
                self._targets[job.id] = [target] if target else []
                self.queue.put(job.id, job.priority)
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
            self._refuse(obj, exc, target)
            return None, str(exc)
        except Exception as exc:  # a bug in validation: one line for the client, the trace in the log
            log.exception("unexpected error validating job %r", jid)
            err = ProtocolError(f"internal error while checking the job ({type(exc).__name__}); see aiedit.log",
                                jid, record=False)
            self._refuse(obj, err, target)
            return None, str(err)

    def _refuse(self, obj: dict[str, Any] | None, exc: ProtocolError, target: ReplyTo | None) -> None:
        jid, msg = exc.job_id, str(exc)
        log.info("refused job %r: %s", jid, msg)
        if jid and obj is not None and exc.record:
            with self._lock:
                if not self._taken(jid):
                    st = refused_status(obj, jid, msg, model=self.model_name or self.model_spec)
                    self._write(st)
                    self._status[jid] = st
                    self._taken_lower.add(jid.lower())
        if target:
            self.send(target, "/aiedit/error", [jid, msg])

    def _taken(self, jid: str) -> bool:
        # case-insensitively: on macOS and Windows "A" and "a" would share one folder
        return jid.lower() in self._taken_lower or self.spool.job_exists(jid)

    def _check_model(self, job: Job) -> None:
        if job.model is not None and job.model not in (self.model_spec, self.model_name):
            raise ProtocolError(
                f"this daemon serves model {self.model_name or self.model_spec!r}, "
                f"the job asks for {job.model!r}",
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
            if age < SETTLE_S:
                return False  # probably still being written in place
            self._reject_file(path, str(exc))
            return True
        if obj.get("op") == "cancel":
            self._cancel_file(path, obj)
            return True
        jid = obj.get("id")
        if valid_id(jid):
            with self._lock:
                if jid in self._status and self._accepted_from(jid, obj, time.time() - age):
                    path.unlink(missing_ok=True)  # accepted before a crash, file not yet removed
                    return True
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
        if req.reply is not None and not reply_allowed(req.reply, sender, trusted=self.token is not None):
            if sender:
                self.send(sender, "/aiedit/error", [req.id, REPLY_HOST_MSG])
            return REPLY_HOST_MSG
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
                elif self._running == req.id and self._cancel is not None:
                    self._cancel.cancel("cancelled by a client")
                    log.info("cancelling running job %s", req.id)
        if err and target:
            self.send(target, "/aiedit/error", [req.id, err])
        return err

    def status_list(self) -> dict[str, Any]:
        """``{"jobs": [...]}``: running, then queued in run order, then the 50 most recently finished."""
        with self._lock:
            active = ([self._running] if self._running else []) + self.queue.order()
            done = sorted(
                (s for s in self._status.values() if s.get("state") in STATES_FINAL),
                key=lambda s: s.get("updated") or 0,
                reverse=True,
            )[:RECENT_FINISHED]
            return {
                "jobs": [dict(self._status[j]) for j in active if j in self._status] + [dict(s) for s in done]
            }

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
        }

    # -- worker side -----------------------------------------------------------------------------------------

    def next_job(self, timeout: float) -> tuple[Job, CancelToken] | None:
        jid = self.queue.get(timeout)
        if jid is None:
            return None
        with self._lock:
            job = self._jobs.get(jid)
            if job is None or self._status[jid]["state"] != "queued":
                return None
            self._running, self._cancel = jid, CancelToken()
            st = self._status[jid]
            st.update(state="running", stage="preparing", updated=time.time())
            self._write(st)
            return job, self._cancel

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
        if self._running == jid:
            self._running, self._cancel = None, None
        self._jobs.pop(jid, None)
        self._last_sent.pop(jid, None)
        self._last_write.pop(jid, None)
        log.info("job %s %s%s", jid, state, f": {error}" if error else "")
        if state == "done":
            self._emit(jid, "/aiedit/done", [jid, json.dumps(st)])
        elif state == "failed":
            self._emit(jid, "/aiedit/error", [jid, error or "failed"])
        else:
            self._emit(jid, "/aiedit/cancelled", [jid])
        self._targets.pop(jid, None)

    def is_current(self, jid: str) -> bool:
        with self._lock:
            return self._running == jid

    # -- shutdown --------------------------------------------------------------------------------------------

    def stop_running(self, reason: str) -> str | None:
        """Ask the running job to stop (daemon shutdown); queued jobs stay queued. Returns its id."""
        with self._lock:
            self.queue.close()
            self.closed.set()
            if self._running and self._cancel is not None:
                self._cancel.cancel(reason)
            return self._running

    def abandon_running(self, reason: str) -> None:
        """Mark a job the worker did not stop in time as cancelled (the process is about to exit)."""
        with self._lock:
            if self._running:
                self._finish(self._running, "cancelled", reason)

    # -- helpers ---------------------------------------------------------------------------------------------

    def _write(self, st: dict[str, Any]) -> None:
        try:
            self.spool.write_status(st)
        except (OSError, ValueError) as exc:
            log.error("cannot write status of %s: %s", st.get("id"), exc)

    def _emit(self, jid: str, address: str, args: list[Any]) -> None:
        for target in self._targets.get(jid, []):
            self.send(target, address, args)


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
