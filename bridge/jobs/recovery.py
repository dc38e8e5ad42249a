"""Rebuilding the job table from the spool when the daemon starts.

Durability (decided here, documented in docs/architecture.md): at start, ``queued`` jobs are queued again in
their original order; ``running`` jobs become ``failed`` ("the engine stopped during this job") instead of
being re-run, because a job that killed the engine (out of memory, a crash) would kill it again in a loop. Clients
re-send. One hostile or damaged record is one failed job, never a failed start.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from bridge.jobs.models import ModelMenu
from bridge.jobs.protocol import STATES_FINAL, Job, PathMap, ProtocolError, parse_job, valid_id
from bridge.jobs.records import STOPPED_MSG, placeholder, status_ok
from bridge.jobs.table import JobTable

log = logging.getLogger("aiedit.service")


def recover(table: JobTable, model: ModelMenu, path_map: PathMap) -> None:
    """Rebuild the job table from the spool: resume ``queued`` jobs, fail ``running`` ones (see module doc)."""
    t = table
    removed = t.spool.remove_partials()
    if removed:
        log.info("removed %d half-written take(s) left by a stopped daemon", removed)
    resume: list[tuple[float, Job, dict[str, Any]]] = []
    finished: list[tuple[float, str]] = []
    for jid, st in t.spool.iter_statuses():
        if not valid_id(jid):
            continue
        try:  # one hostile record (issue 20: nesting, wrong types, huge numbers) must not stop the start
            st, job = _recover_one(t, model, path_map, jid, st)
        except Exception as exc:
            log.warning("job %s: unusable record (%s); marked failed", jid, type(exc).__name__)
            st, job = placeholder(jid, "this job's status file was unreadable"), None
            t.write(st)
        if job is not None:
            resume.append((st["created"], job, st))
        elif st["state"] in STATES_FINAL:
            finished.append((st["updated"], jid))
        t.status[jid] = st
        t.taken_lower.add(jid.lower())
    for _, jid in sorted(finished):
        t.index_done(jid, t.status[jid]["updated"])
    for _, job, _st in sorted(resume, key=lambda r: r[0]):
        t.jobs[job.id] = job
        t.targets[job.id] = [job.reply] if job.reply else []
        t.queue.put(job.id, job.priority, key=job.retake_key)
    if resume:
        log.info("resumed %d queued job(s)", len(resume))


def _recover_one(t: JobTable, model: ModelMenu, path_map: PathMap, jid: str,
                 st: dict[str, Any] | None) -> tuple[dict[str, Any], Job | None]:
    """The status to keep for one job folder at start, and its job when it is to be queued again."""
    if not status_ok(jid, st):
        st = placeholder(jid, "this job's status file was unreadable")
        t.write(st)
        return st, None
    assert st is not None
    state = st["state"]
    if state == "running":  # takes it may have published before its final status are withdrawn
        t.spool.remove_takes(jid)
        st.update(state="failed", stage="failed", error=STOPPED_MSG, updated=time.time())
        t.write(st)
        log.info("job %s was running when the engine stopped: marked failed", jid)
    elif state == "queued":
        try:
            job = parse_job(t.spool.read_job(jid), path_map=path_map)
            job = model.check(job, path_map)  # the daemon may have restarted with another --model or models
            return st, job
        except Exception as exc:  # OSError, ValueError, RecursionError, ProtocolError...
            msg = exc if isinstance(exc, ProtocolError) else "its job.json is missing or unreadable"
            st.update(state="failed", stage="failed", error=f"cannot resume: {msg}", updated=time.time())
            t.write(st)
    return st, None
