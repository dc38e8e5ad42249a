"""Accepting or refusing a job, for every transport (OSC and the spool inbox), in two steps.

:meth:`Admission.check` is what the answering thread may do: no file is touched. It reads the token, room in the
queue (and the sender's fair share of it), the reply address, the job's fields, the model and mode, and charges the
sender's job budget — in that order, so a flood costs little before anything is read. :meth:`Admission.accept` is
the rest, on another thread (the OSC job checker, or the inbox's own thread) and outside the service lock: the
source probe and the work limits (one call, :meth:`bridge.jobs.limits.Limits.check`, given what the probe read),
then the job's folder and, under the lock, the queue and the ``/aiedit/ack``. So the ack still means "accepted and
queued": it is sent once the job is, only later than the answering thread's other answers. A refused job gets an
``/aiedit/error`` and, within a budget, a failed status.

Budgets, per sender (:func:`bridge.jobs.protocol.host_key`; the spool inbox is one sender, ``"spool"``):

- jobs: :data:`JOB_RATE` a second after a burst of :data:`JOB_BURST`, charged before the probe; an OSC sender over
  it is refused ``busy:`` (nothing read or written), the inbox leaves its files waiting (:mod:`bridge.jobs.inbox`);
- room: at ``--max-queued`` every sender is refused ``busy:`` and remembered as waiting; a freed place goes first
  to a waiting sender holding fewer queued jobs, so one that retries the fastest cannot take every freed place
  from the others (REAPER's spool jobs waited behind an OSC flooder).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from bridge.jobs.limits import Limits
from bridge.jobs.models import ModelMenu
from bridge.jobs.protocol import (
    REPLY_HOST_MSG,
    SELF_REPLY_MSG,
    Job,
    PathMap,
    ProtocolError,
    ReplyTo,
    check_source,
    decode_json,
    host_key,
    new_status,
    parse_job,
    parse_reply,
    refused_status,
    reply_allowed,
    reply_family_error,
    reply_to_self,
    token_ok,
    valid_id,
)
from bridge.jobs.records import dumps
from bridge.jobs.table import JobTable
from bridge.wire.throttle import Buckets
from engine.errors import InputError

log = logging.getLogger("aiedit.service")

# Refusals of OSC jobs recorded as failed statuses (jobs/<id>/ + memory until --keep-days): a 1 KB datagram must
# not buy a folder at the flood's rate. Over this budget the sender still gets its /aiedit/error, nothing is kept.
# Spool refusals are always recorded (REAPER learns of them only from status.json; the writer pays the disk).
REFUSALS_RECORDED_PER_S, REFUSALS_RECORDED_BURST = 2.0, 200.0
# Jobs each sender host may submit (each costs a probe, a folder and a place in the history), after a burst: a
# REAPER batch of 200 items is taken at once, and submit-then-cancel at full speed buys 10 folders a second.
JOB_RATE, JOB_BURST = 10.0, 200.0
SPOOL = "spool"  # the inbox's sender key
WAITING_S = 5.0  # an OSC sender refused for room counts as waiting this long (it retries, or gave up)


@dataclass
class Prepared:
    """A job that passed :meth:`Admission.check`: what :meth:`Admission.accept` needs."""

    obj: dict[str, Any]
    job: Job
    target: ReplyTo | None  # where its answers go
    key: str  # its sender (for the room share)
    from_spool: bool


class Admission:
    def __init__(self, table: JobTable, models: ModelMenu, *, token: str | None, path_map: PathMap,
                 ip_version: int, limits: Limits, max_queued: int, own: tuple[str, int] = ("127.0.0.1", 0)
                 ) -> None:
        self.table, self.models = table, models
        self.own = own  # the daemon's own (host, port): never a reply address
        self.token, self.path_map, self.ip_version = token, path_map, ip_version
        self.limits, self.max_queued = limits, max_queued
        self.jobs_budget = Buckets(JOB_RATE, JOB_BURST)
        self._refusals = Buckets(REFUSALS_RECORDED_PER_S, REFUSALS_RECORDED_BURST, max_keys=1)
        self._refusals_dropped = False  # logged once per episode

    def submit(self, message: object, sender: ReplyTo | None) -> tuple[str | None, str | None]:
        """Accept a job (JSON text or object) or refuse it with an ``/aiedit/error``, both steps on this thread.

        Returns (id, None) when accepted, (None, the one-line error) when refused. ``sender`` is the OSC sender
        (default reply address); None for spool files, which get no events unless the job names a ``reply``
        (their budget is the inbox's to keep: :meth:`spool_wait`)."""
        prepared = self.check(message, sender)
        if isinstance(prepared, str):
            return None, prepared
        return self.accept(prepared)

    # -- step 1: what the answering thread does -------------------------------------------------------------------

    def check(self, message: object, sender: ReplyTo | None) -> Prepared | str:
        """Everything that touches no file: the job ready for :meth:`accept`, or the error (already answered)."""
        t = self.table
        obj: dict[str, Any] | None = None
        jid = ""
        target = sender
        key = SPOOL if sender is None else host_key(sender.host)
        try:
            obj = message if isinstance(message, dict) else decode_json(message)
            jid = obj.get("id") if valid_id(obj.get("id")) else ""
            if not token_ok(self.token, obj.get("token")):
                log.warning("refused job %r from %s: missing or wrong token", jid, sender)
                raise ProtocolError("refused: missing or wrong token", jid, record=False)
            trusted = self.token is not None
            with t.lock:  # before any file is read or written: floods stay cheap
                busy = self.room(key)
            if busy:
                raise ProtocolError(busy, jid, record=False)
            try:  # refusals from here on may go to the job's reply address, if it is an allowed one
                wanted = parse_reply(obj.get("reply"))
                if (wanted is not None and reply_allowed(wanted, sender, trusted=trusted)
                        and not reply_family_error(wanted, self.ip_version) and not reply_to_self(wanted, *self.own)):
                    target = wanted
            except InputError:
                pass
            job = parse_job(obj, path_map=self.path_map)
            if job.reply is not None and not reply_allowed(job.reply, sender, trusted=trusted):
                raise ProtocolError(REPLY_HOST_MSG, job.id)
            if job.reply is not None and (family := reply_family_error(job.reply, self.ip_version)):
                raise ProtocolError(family, job.id)
            if job.reply is not None and reply_to_self(job.reply, *self.own):
                raise ProtocolError(SELF_REPLY_MSG, job.id)
            job = self.models.check(job, self.path_map)  # its model named as daemon.json lists it
            if sender is not None and not self.jobs_budget.take(key):
                raise ProtocolError(f"busy: too many jobs from {sender.host[:60]} (at most {JOB_RATE:g} a second "
                                    f"after {JOB_BURST:g}); send it again in {self.jobs_budget.wait_s(key):.0f} s",
                                    job.id, record=False)
            return Prepared(obj, job, target, key, sender is None)
        except ProtocolError as exc:
            self._refuse(obj, exc, target, from_spool=sender is None)
            return str(exc)
        except Exception as exc:  # a bug in validation: one line for the client, the trace in the log
            return self._internal(obj, jid, exc, target, sender is None)

    def room(self, key: str) -> str | None:
        """Why sender ``key`` gets no place in the queue now (a ``busy:`` line), or None. Under the lock.

        At ``--max-queued`` everyone is refused, and remembered as waiting. With places free, a sender is still
        refused while the free places are no more than the waiting senders that hold fewer queued jobs than it:
        those places are theirs (they may retry slower: the spool inbox looks when told of room)."""
        t = self.table
        now = time.monotonic()
        n = t.queued_count()
        if n >= self.max_queued:
            self._wait(key, now)
            return (f"busy: {n} jobs are queued, the most this engine takes (aiedit serve --max-queued); send it "
                    "again later")
        mine = t.queued_by.get(key, 0)
        poorer = sum(1 for k, since in t.waiting.items()
                     if k != key and (k == SPOOL or now - since < WAITING_S) and t.queued_by.get(k, 0) < mine)
        if poorer and self.max_queued - n <= poorer:
            self._wait(key, now)
            return (f"busy: the queue is nearly full ({n} of {self.max_queued}) and its free places go to senders "
                    "with fewer queued jobs; send it again later")
        if key != SPOOL:
            t.waiting.pop(key, None)
        return None

    def _wait(self, key: str, now: float) -> None:
        w = self.table.waiting
        if key not in w and len(w) >= 1024:  # forget those that gave up
            for k in [k for k, since in w.items() if k != SPOOL and now - since >= WAITING_S]:
                del w[k]
        if key in w or len(w) < 1024:
            w[key] = now

    def spool_wait(self) -> float | None:
        """For the inbox, before it reads a job file: None when a spool job may go ahead now (a token of the
        spool's budget is taken), else seconds to wait (``inf``: until a place in the queue is free)."""
        with self.table.lock:
            if self.room(SPOOL):
                return float("inf")
        if not self.jobs_budget.take(SPOOL):
            return max(0.05, self.jobs_budget.wait_s(SPOOL))
        return None

    # -- step 2: the probe and the job's creation, off the answering thread ---------------------------------------

    def accept(self, p: Prepared) -> tuple[str | None, str | None]:
        """Probe the source and check the limits (no lock held), then create the job's folder and queue it; the
        ``/aiedit/ack`` goes out once it is queued. Returns (id, None) or (None, the error, already answered)."""
        t, job = self.table, p.job
        reserved = False
        try:
            info, frames = check_source(job)  # the probe: never under the lock, never on the answering thread
            self.limits.check(job, info.sample_rate, info.channels, frames)  # one call: every limit, on what was read
            st = new_status(job, model=job.model or self.models.label, client_path=p.obj["source"]["path"])
            st.update(sample_rate=info.sample_rate, channels=info.channels, frames=frames)
            with t.lock:
                busy = self.room(p.key)
                if busy:
                    raise ProtocolError(busy, job.id, record=False)
                if t.taken(job.id):
                    raise ProtocolError(f"job id {job.id!r} is already taken", job.id)
                t.taken_lower.add(job.id.lower())  # reserved: a second job with this id is "already taken"
                t.reserved.add(job.id)
                reserved = True
            try:
                t.spool.create_job(job.id, job.raw, st)  # only the protocol's fields, never the token
                t.spool.wrote(None)
            except FileExistsError:
                raise ProtocolError(f"job id {job.id!r} is already taken", job.id, record=False) from None
            except (OSError, ValueError) as exc:
                t.spool.wrote(exc)
                raise ProtocolError(self._spool_problem(job.id, exc), job.id, record=False) from None
            with t.lock:
                t.reserved.discard(job.id)
                reserved = False
                t.status[job.id] = st
                t.texts[job.id] = dumps(st)
                t.jobs[job.id] = job
                t.targets[job.id] = [p.target] if p.target else []
                t.enqueue(job, p.key)
                t.emit(job.id, "/aiedit/ack", [job.id])
            log.info("accepted job %s (%s, %s, %d take(s), %s)", job.id, job.model, job.params.mode,
                     len(job.params.etas), job.priority)
            return job.id, None
        except ProtocolError as exc:
            self._unreserve(job.id, reserved)
            self._refuse(p.obj, exc, p.target, from_spool=p.from_spool)
            return None, str(exc)
        except Exception as exc:
            self._unreserve(job.id, reserved)
            return None, self._internal(p.obj, job.id, exc, p.target, p.from_spool)

    def refuse_busy(self, p: Prepared, message: str) -> None:
        """Refuse a checked job that cannot be taken further now (the checker is full): a ``busy:`` line."""
        self._refuse(p.obj, ProtocolError(message, p.job.id, record=False), p.target, from_spool=p.from_spool)

    def _unreserve(self, jid: str, reserved: bool) -> None:
        if reserved:
            with self.table.lock:
                self.table.reserved.discard(jid)
                self.table.taken_lower.discard(jid.lower())

    def _spool_problem(self, jid: str, exc: Exception) -> str:
        """The one line for a job whose folder could not be written."""
        if self.table.spool.full:
            return (f"busy: the spool's disk is full (no space left in {self.table.spool.root}); free some space "
                    "and send the job again")
        log.error("cannot create the folder of job %s: %s", jid, exc)
        return "cannot create the job's folder in the spool (see aiedit.log)"

    def _internal(self, obj: dict[str, Any] | None, jid: str, exc: Exception, target: ReplyTo | None,
                  from_spool: bool) -> str:
        log.error("unexpected error checking job %r", jid, exc_info=exc)
        err = ProtocolError(f"internal error while checking the job ({type(exc).__name__}); see aiedit.log", jid,
                            record=False)
        self._refuse(obj, err, target, from_spool=from_spool)
        return str(err)

    def _refuse(self, obj: dict[str, Any] | None, exc: ProtocolError, target: ReplyTo | None, *,
                from_spool: bool) -> None:
        t = self.table
        jid, msg = exc.job_id, str(exc)
        log.info("refused job %r: %s", jid, msg)
        if jid and obj is not None and exc.record:
            with t.lock:
                if not t.taken(jid) and self._may_record_refusal(from_spool):
                    st = refused_status(obj, jid, msg, model=self.models.label)
                    t.status[jid] = st
                    t.write(st)
                    t.taken_lower.add(jid.lower())
                    t.index_done(jid, st["updated"])
        if target:
            t.send(target, "/aiedit/error", [jid, msg])

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
