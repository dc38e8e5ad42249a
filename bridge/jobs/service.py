"""The daemon's core: accepts, queues, cancels and reports jobs for every transport (OSC and the spool inbox).

:class:`Service` is the one object the OSC server, the inbox watcher, the workers and the daemon's main loop call;
it holds the parts and forwards to them. The parts share one job table and its one lock
(:mod:`bridge.jobs.table`: statuses written before their events, the indexes the answers read):

- :mod:`bridge.jobs.admission`: accept or refuse a job (token, room, reply address, fields, model, source,
  limits); :mod:`bridge.jobs.inbox`: the spool inbox's files, through the same admission;
- :mod:`bridge.jobs.answers`: cancel, and the status answer;
- :mod:`bridge.jobs.running`: what the workers call (next job, progress, finish, requeue) and the shutdown;
- :mod:`bridge.jobs.recovery`: the table rebuilt from the spool at start;
- :mod:`bridge.jobs.retention`: finished jobs deleted after ``--keep-days``.

Nothing here imports torch: the answering path must stay fast while the worker thread computes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.jobs.admission import Admission, Prepared
from bridge.jobs.answers import ANSWER_BYTES, Answers
from bridge.jobs.inbox import Inbox
from bridge.jobs.limits import MAX_QUEUED, Limits
from bridge.jobs.models import ModelMenu
from bridge.jobs.protocol import VERSION, CancelRequest, Job, PathMap, ReplyTo
from bridge.jobs.recovery import recover
from bridge.jobs.retention import KEEP_DAYS, Retention
from bridge.jobs.running import Running
from bridge.jobs.spool import Spool, Wait
from bridge.jobs.table import MAX_HISTORY, JobTable, SendFn
from engine.audio_io import SourceAudio
from engine.progress import CancelToken


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
        max_history: int = MAX_HISTORY,
    ) -> None:
        self.limits = limits or Limits()
        self.ip_version = 6 if ":" in host else 4
        self.spool, self.send = spool, send
        self.token, self.path_map = token, path_map or PathMap()
        self.host, self.port = host, port
        self.started = time.time()
        self.models = ModelMenu(model)  # the default and the models on disk, listed once (no torch)
        if self.limits.memory_for is None:  # the memory limit costs a job on the model it names
            self.limits = dataclasses.replace(self.limits, memory_for=self.models.memory)
        self.workers_info: Callable[[], list[dict[str, Any]]] | None = None  # daemon.json's "workers" (workers.pool)
        self.loaded_models: Callable[[], set[str]] | None = None  # the models some worker holds (workers.pool)
        self.table = JobTable(spool, send)
        self.table.max_history = max(1, max_history)
        self.queue, self.closed = self.table.queue, self.table.closed
        self.admission = Admission(self.table, self.models, token=token, path_map=self.path_map,
                                   ip_version=self.ip_version, limits=self.limits, max_queued=max_queued,
                                   own=(host, port))
        self.answers = Answers(self.table, token=token, ip_version=self.ip_version, own=(host, port))
        self.inbox = Inbox(self.table, submit=self.submit, cancel=self.cancel,
                           spool_wait=self.admission.spool_wait)
        self.runner = Running(self.table, self.limits)
        self.retention = Retention(self.table, keep_days)

    # -- start-up --------------------------------------------------------------------------------------------

    def recover(self) -> None:
        """Rebuild the job table from the spool (:func:`bridge.jobs.recovery.recover`)."""
        recover(self.table, self.models, self.path_map)

    # -- answering path (OSC thread, inbox thread) -----------------------------------------------------------

    def submit(self, message: object, sender: ReplyTo | None) -> tuple[str | None, str | None]:
        """Accept or refuse a job: (id, None) or (None, the one-line error). See :meth:`Admission.submit`."""
        return self.admission.submit(message, sender)

    def handle_inbox_file(self, path: Path) -> bool | Wait:
        """Consume one inbox file; False leaves it for the next scan, a Wait until there is room. See
        :meth:`Inbox.handle_file`."""
        return self.inbox.handle_file(path)

    def inbox_scanned(self, names: set[str]) -> None:
        """After each inbox scan (see :meth:`Inbox.end_scan`)."""
        self.inbox.end_scan(names)

    def check_job(self, message: object, sender: ReplyTo) -> Prepared | str:
        """Step 1 of accepting an OSC job, on the answering thread (no file touched). See
        :meth:`Admission.check`."""
        return self.admission.check(message, sender)

    def accept_job(self, prepared: Prepared) -> tuple[str | None, str | None]:
        """Step 2, off the answering thread: the probe, the limits, the folder, the queue, the ack. See
        :meth:`Admission.accept`."""
        return self.admission.accept(prepared)

    def cancel(self, req: CancelRequest, sender: ReplyTo | None) -> str | None:
        """Cancel a queued or running job: None, or the error. See :meth:`Answers.cancel`."""
        return self.answers.cancel(req, sender)

    def status_list(self) -> dict[str, Any]:
        """The status answer as an object (see :meth:`status_text`)."""
        return json.loads(self.status_text())

    def status_text(self, since: float | None = None, budget: int = ANSWER_BYTES) -> str:
        """The ``/aiedit/status`` answer. See :meth:`Answers.status_text`."""
        return self.answers.status_text(since, budget)

    def daemon_info(self) -> dict[str, Any]:
        """daemon.json's content (the heartbeat is added by its writer)."""
        return {
            "version": VERSION,
            "pid": os.getpid(),
            "host": self.host,
            "port": self.port,
            "spool": str(self.spool.root),
            "model": self.models.label,  # the default model ("auto" resolved)
            "modes": list(self.models.modes),  # the edit modes that model runs (docs/protocol.md)
            "models": self.models.info(self.loaded_models() if self.loaded_models is not None else ()),
            "started": self.started,
            "heartbeat": time.time(),
            **({"workers": self.workers_info()} if self.workers_info is not None else {}),
            **({"problem": problem} if (problem := self.spool.problem()) is not None else {}),
        }

    # -- worker side (see bridge.jobs.running) ---------------------------------------------------------------

    def next_job(self, timeout: float, worker: str | None = None,
                 choose: Callable[[list[tuple[str, str | None]]], str | None] | None = None,
                 ) -> tuple[Job, CancelToken] | None:
        return self.runner.next_job(timeout, worker, choose)

    def set_worker(self, jid: str, worker: str) -> None:
        self.runner.set_worker(jid, worker)

    def requeue(self, jid: str, reason: str) -> bool:
        return self.runner.requeue(jid, reason)

    def progress(self, jid: str, stage: str, fraction: float) -> None:
        self.runner.progress(jid, stage, fraction)

    def model_loaded(self, name: str, modes: tuple[str, ...] | None = None) -> None:
        """A worker loaded ``name``: daemon.json lists that model's own modes from now on."""
        self.models.loaded(name, modes)

    def finish(self, jid: str, state: str, error: str | None = None, **fields: Any) -> None:
        self.runner.finish(jid, state, error, **fields)

    def read_source(self, job: Job) -> SourceAudio:
        return self.runner.read_source(job)

    def check_output(self, job: Job, sample_rate: int, channels: int, frames: int) -> None:
        self.runner.check_output(job, sample_rate, channels, frames)

    def is_current(self, jid: str) -> bool:
        return self.runner.is_current(jid)

    # -- shutdown --------------------------------------------------------------------------------------------

    def stop_running(self, reason: str) -> list[str]:
        return self.runner.stop_running(reason)

    def abandon_running(self, reason: str) -> None:
        self.runner.abandon_running(reason)

    # -- maintenance (the daemon's main loop) ------------------------------------------------------------------

    def maintain(self) -> None:
        """Write again the statuses whose last write failed (a full or read-only spool that recovered), and remove
        the folders of finished jobs past the history bounds (``--max-history``)."""
        self.table.rewrite_dirty()
        self.retention.remove_evicted()

    def prune(self) -> int:
        """Delete the folders of jobs that finished more than ``keep_days`` ago. See :meth:`Retention.prune`."""
        return self.retention.prune()
