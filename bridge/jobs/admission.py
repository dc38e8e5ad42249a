"""Accepting or refusing a job, for every transport (OSC and the spool inbox): the token, room in the queue, the
reply address, the job's fields, the model and mode, the source file and the work limits, in that order, so a
flood costs little before any file is read. An accepted job gets its folder and an ``/aiedit/ack``; a refused
one an ``/aiedit/error`` and, within a budget, a failed status."""

from __future__ import annotations

import logging
from typing import Any

from bridge.jobs.limits import Limits
from bridge.jobs.models import ModelMenu
from bridge.jobs.protocol import (
    REPLY_HOST_MSG,
    PathMap,
    ProtocolError,
    ReplyTo,
    check_source,
    decode_json,
    new_status,
    parse_job,
    parse_reply,
    refused_status,
    reply_allowed,
    reply_family_error,
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


class Admission:
    def __init__(self, table: JobTable, models: ModelMenu, *, token: str | None, path_map: PathMap,
                 ip_version: int, limits: Limits, max_queued: int) -> None:
        self.table, self.models = table, models
        self.token, self.path_map, self.ip_version = token, path_map, ip_version
        self.limits, self.max_queued = limits, max_queued
        self._refusals = Buckets(REFUSALS_RECORDED_PER_S, REFUSALS_RECORDED_BURST, max_keys=1)
        self._refusals_dropped = False  # logged once per episode

    def submit(self, message: object, sender: ReplyTo | None) -> tuple[str | None, str | None]:
        """Accept a job (JSON text or object) or refuse it with an ``/aiedit/error``.

        Returns (id, None) when accepted, (None, the one-line error) when refused.
        ``sender`` is the OSC sender (default reply address); None for spool files, which get no events unless
        the job names a ``reply``.
        """
        t = self.table
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
            if len(t.queue) >= self.max_queued:  # before any file is read or written: floods stay cheap
                raise ProtocolError(f"busy: {len(t.queue)} jobs are queued, the most this engine takes "
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
            with t.lock:
                if t.taken(job.id):
                    raise ProtocolError(f"job id {job.id!r} is already taken", job.id)
                job = self.models.check(job, self.path_map)  # its model named as daemon.json lists it
                info, frames = check_source(job)
                self.limits.check(job, info.sample_rate, info.channels, frames)
                st = new_status(job, model=job.model or self.models.label, client_path=obj["source"]["path"])
                st.update(sample_rate=info.sample_rate, channels=info.channels, frames=frames)
                try:
                    t.spool.create_job(job.id, obj, st)
                except FileExistsError:
                    raise ProtocolError(f"job id {job.id!r} is already taken", job.id, record=False) from None
                except (OSError, ValueError) as exc:
                    log.error("cannot create the folder of job %s: %s", job.id, exc)
                    raise ProtocolError("cannot create the job's folder in the spool (see aiedit.log)", job.id,
                                        record=False) from None
                t.status[job.id] = st
                t.texts[job.id] = dumps(st)
                t.taken_lower.add(job.id.lower())
                t.jobs[job.id] = job
                t.targets[job.id] = [target] if target else []
                t.queue.put(job.id, job.priority, key=job.retake_key)
                t.emit(job.id, "/aiedit/ack", [job.id])
            log.info(
                "accepted job %s (%s, %s, %d take(s), %s)",
                job.id,
                job.model,
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
        t = self.table
        jid, msg = exc.job_id, str(exc)
        log.info("refused job %r: %s", jid, msg)
        if jid and obj is not None and exc.record:
            with t.lock:
                if not t.taken(jid) and self._may_record_refusal(from_spool):
                    st = refused_status(obj, jid, msg, model=self.models.label)
                    t.status[jid] = st
                    t.write(st)
                    t.index_done(jid, st["updated"])
                    t.taken_lower.add(jid.lower())
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
