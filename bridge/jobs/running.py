"""The workers' side of the job table: take the next job, report progress, check the source again, end the job or
queue it again; and, at shutdown, stop the running jobs. Local worker threads and Ray actors' threads call these
(:mod:`bridge.workers`)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from bridge.jobs.limits import Limits
from bridge.jobs.protocol import STATES_FINAL, Job, open_regular
from bridge.jobs.table import JobTable
from engine.audio_io import SourceAudio, read_source
from engine.errors import InputError
from engine.progress import CancelToken

log = logging.getLogger("aiedit.service")


class Running:
    def __init__(self, table: JobTable, limits: Limits) -> None:
        self.table, self.limits = table, limits

    def next_job(self, timeout: float, worker: str | None = None,
                 choose: Callable[[list[tuple[str, str | None]]], str | None] | None = None,
                 ) -> tuple[Job, CancelToken] | None:
        """The next job for ``worker`` (its name goes into the status), picked by ``choose`` (see
        :meth:`bridge.jobs.queue.JobQueue.get`); None when there is none within ``timeout``."""
        t = self.table
        jid = t.queue.get(timeout, choose)
        if jid is None:
            return None
        with t.lock:
            t.dequeued(jid)
            job, st = t.jobs.get(jid), t.status.get(jid)
            if job is None or st is None or st.get("state") != "queued":
                if st is None:  # an id with no status (a record that should never have been queued): dropped,
                    t.jobs.pop(jid, None)  # and the worker asks for the next one instead of dying on it
                    t.targets.pop(jid, None)
                    log.error("queued job %s has no status; dropped", jid)
                return None
            token = t.running[jid] = CancelToken()
            st.update(state="running", stage="preparing", updated=time.time())
            if worker:
                st["worker"] = worker
            t.write(st)
            return job, token

    def set_worker(self, jid: str, worker: str) -> None:
        """Name the worker of a running job again (a worker on ``--device`` auto learns its device on loading)."""
        t = self.table
        with t.lock:
            st = t.status.get(jid)
            if st is not None and st["state"] == "running" and st.get("worker") != worker:
                st.update(worker=worker, updated=time.time())
                t.write(st)

    def requeue(self, jid: str, reason: str) -> bool:
        """Put a running job back at the head of its priority (its remote worker died: it runs again on
        another). False when it already ended, was cancelled meanwhile (the caller then ends it cancelled), or the
        daemon is stopping."""
        t = self.table
        with t.lock:
            st = t.status.get(jid)
            if st is None or st["state"] != "running" or jid not in t.jobs or t.closed.is_set():
                return False
            token = t.running.get(jid)
            if token is None or token.cancelled:  # a cancel was answered "done": the caller ends it cancelled
                return False
            t.running.pop(jid, None)
            t.last_sent.pop(jid, None)
            t.last_write.pop(jid, None)
            st.update(state="queued", stage="queued", worker=None, progress=0.0, updated=time.time())
            t.write(st)
            t.enqueue(t.jobs[jid], "requeued", front=True)
            log.info("job %s queued again: %s", jid, reason)
            return True

    def progress(self, jid: str, stage: str, fraction: float) -> None:
        """Record progress (kept monotone) and send a throttled ``/aiedit/progress``."""
        t = self.table
        with t.lock:
            st = t.status.get(jid)
            if st is None or st["state"] != "running":
                return
            fraction = max(float(st["progress"]), min(1.0, max(0.0, fraction)))
            changed = stage != st["stage"]
            st.update(stage=stage, progress=round(fraction, 4), updated=time.time())
            now = time.monotonic()
            if changed or now - t.last_write.get(jid, 0) >= 0.5:
                t.last_write[jid] = now
                t.write(st)
            _, last_frac, last_t = t.last_sent.get(jid, ("", -1.0, 0.0))
            if changed or fraction - last_frac >= 0.01 or (now - last_t >= 0.25 and fraction > last_frac):
                t.last_sent[jid] = (stage, fraction, now)
                t.emit(jid, "/aiedit/progress", [jid, stage, float(st["progress"])])

    def finish(self, jid: str, state: str, error: str | None = None, **fields: Any) -> None:
        """End the running job (``done``/``failed``/``cancelled``); ignored if it already ended."""
        t = self.table
        with t.lock:
            st = t.status.get(jid)
            if st is None or st["state"] in STATES_FINAL:
                return
            t.finish(jid, state, error, **fields)

    def read_source(self, job: Job) -> SourceAudio:
        """The job's region, read for its edit: the file is opened once (read-only, ``O_NONBLOCK``, a regular file
        by ``fstat`` on that descriptor: a FIFO swapped in after the ack cannot hang the worker), its header parsed
        once, the work limits checked on that header, and exactly the frames checked read through the same handle.
        The edit gets these samples (``Editor.edit(audio=...)``) and opens nothing itself, so a header rewritten in
        place after this check cannot make the edit larger than what was checked. InputError, with the numbers,
        when the source was replaced, grew past a limit or changed while it was read."""
        fd = open_regular(job.source_path)
        try:
            return read_source(fd, job.request.region,
                               lambda info, frames: self.check_output(job, info.sample_rate, info.channels, frames),
                               name=os.path.basename(job.source_path))
        except InputError as exc:
            text = str(exc)
            prefix = "the source changed after the job was accepted: "
            raise InputError(text if text.startswith(prefix) else prefix + text) from None
        finally:
            os.close(fd)

    def check_output(self, job: Job, sample_rate: int, channels: int, frames: int) -> None:
        """InputError when audio of this shape is over a work limit (before a take is written)."""
        problem = self.limits.problem(sample_rate, channels, frames, len(job.params.etas), job.params.mode,
                                      job.model)
        if problem:
            raise InputError(f"the source changed after the job was accepted: {problem}")

    def is_current(self, jid: str) -> bool:
        with self.table.lock:
            return jid in self.table.running

    def stop_running(self, reason: str) -> list[str]:
        """Ask every running job to stop (daemon shutdown); queued jobs stay queued. Returns their ids."""
        t = self.table
        with t.lock:
            t.queue.close()
            t.closed.set()
            for token in t.running.values():
                token.cancel(reason)
            return list(t.running)

    def abandon_running(self, reason: str) -> None:
        """Mark jobs the workers did not stop in time as cancelled (the process is about to exit)."""
        t = self.table
        with t.lock:
            for jid in list(t.running):
                t.finish(jid, "cancelled", reason)
