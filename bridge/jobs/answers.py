"""What a client asks about jobs it sent: cancel one, and the status answer (running, queued, recently finished),
whose cost is what it lists, never the history (see :mod:`bridge.jobs.table`)."""

from __future__ import annotations

import bisect
import logging

from bridge.jobs.protocol import (
    REPLY_HOST_MSG,
    STATES_FINAL,
    CancelRequest,
    ReplyTo,
    reply_allowed,
    reply_family_error,
    token_ok,
)
from bridge.jobs.records import dumps
from bridge.jobs.table import JobTable

log = logging.getLogger("aiedit.service")

RECENT_FINISHED = 50  # finished jobs in a status answer (the newest, or the next page after ``since``)
QUEUED_SHOWN = 50  # queued jobs listed in one answer, in at most half of it (the total is always given)
ANSWER_BYTES = 64_000  # a status answer fits one UDP datagram


class Answers:
    def __init__(self, table: JobTable, *, token: str | None, ip_version: int) -> None:
        self.table, self.token, self.ip_version = table, token, ip_version

    def cancel(self, req: CancelRequest, sender: ReplyTo | None) -> str | None:
        """Cancel a queued or running job. Returns None on success, else the error (also sent to the
        sender)."""
        t = self.table
        if req.reply is not None and (
            problem := REPLY_HOST_MSG if not reply_allowed(req.reply, sender, trusted=self.token is not None)
            else reply_family_error(req.reply, self.ip_version)
        ):
            if sender:
                t.send(sender, "/aiedit/error", [req.id, problem])
            return problem
        target = req.reply or sender
        err: str | None = None
        with t.lock:
            st = t.status.get(req.id)
            if not token_ok(self.token, req.token):
                log.warning("refused cancel of %s from %s: missing or wrong token", req.id, sender)
                err = "refused: missing or wrong token"
            elif st is None:
                err = f"no job with id {req.id!r}"
            elif st["state"] in STATES_FINAL:
                err = f"job {req.id!r} already finished ({st['state']})"
            elif target and target not in t.targets.setdefault(req.id, []):
                t.targets[req.id].append(target)
            if err is None:
                # The worker may already have popped the id but not yet taken the lock (next_job): a job still
                # marked queued is cancelled here either way, and next_job skips anything not queued.
                if st["state"] == "queued":
                    t.queue.remove(req.id)
                    t.finish(req.id, "cancelled", "cancelled by a client")
                elif req.id in t.running:  # the worker running it (local thread or remote actor) polls this
                    t.running[req.id].cancel("cancelled by a client")
                    log.info("cancelling running job %s", req.id)
        if err and target:
            t.send(target, "/aiedit/error", [req.id, err])
        return err

    def status_text(self, since: float | None = None, budget: int = ANSWER_BYTES) -> str:
        """The ``/aiedit/status`` answer: ``{"jobs": [...], "running": n, "queued": n, "more": bool}``.

        ``jobs`` lists every running job, then queued ones in run order (at most :data:`QUEUED_SHOWN`, in at
        most half of the budget), then
        finished ones: the :data:`RECENT_FINISHED` newest, or with ``since`` the next that many that ended after
        it, oldest first (a client pages on by passing the last one's ``updated``). Whatever would take the
        answer past ``budget`` bytes is left out and ``more`` says so. Costs O(answer), whatever the history.
        """
        t = self.table
        with t.lock:
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

            for jid in list(t.running):
                if not add(dumps(t.status[jid])):  # fresh: progress moves between writes
                    break
            queued = t.queue.head(QUEUED_SHOWN)
            full, budget = budget, max(size, budget // 2)  # leave room for the finished jobs
            for jid in queued:
                if jid in t.status and not add(t.text(jid)):
                    break
            budget = full
            n_queued = len(t.queue)
            more = more or n_queued > len(queued)
            if since is None:
                pick = reversed(range(max(0, len(t.done_ids) - RECENT_FINISHED), len(t.done_ids)))
            else:
                first = bisect.bisect_right(t.done_keys, since)
                pick = iter(range(first, min(len(t.done_ids), first + RECENT_FINISHED)))
                more = more or first + RECENT_FINISHED < len(t.done_ids)
            for i in pick:
                jid = t.done_ids[i]
                if jid in t.status and not add(t.text(jid)):
                    break
            return (f'{{"jobs": [{", ".join(parts)}], "running": {len(t.running)}, '
                    f'"queued": {n_queued}, "more": {"true" if more else "false"}}}')
