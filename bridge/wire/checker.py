"""The job checker: the thread that does for OSC jobs what the answering thread must not — probe the source file
and create the job's folder (:meth:`bridge.jobs.admission.Admission.accept`) — so that a file that takes long to
probe (a WAV of 100,000 empty chunks: 270 ms per 16-job datagram) delays no other client's answers.

Order is kept per sender (address and port): once a sender has work here, its later requests (a ping, a cancel of
the job it just sent, a status) wait behind that work and are answered here too, so a client sees its answers in
the order it asked — a cancel sent right after its job finds it queued. Other senders are answered at once by the
answering thread. Senders take turns (one item each, round robin), and what waits is bounded per sender and in all:
past that, the caller answers ``busy:`` itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable

log = logging.getLogger("aiedit.osc")

PER_SENDER, PER_SENDER_BYTES = 256, 8 << 20  # what one sender may have waiting: items, and their messages' bytes
TOTAL, TOTAL_BYTES = 2048, 32 << 20  # ... and everyone together


class Checker:
    def __init__(self, per_sender: int = PER_SENDER, total: int = TOTAL) -> None:
        self.per_sender, self.total = per_sender, total
        self._cond = threading.Condition()
        self._queues: OrderedDict[Hashable, deque[tuple[Callable[[], None], int]]] = OrderedDict()
        self._bytes: dict[Hashable, int] = {}
        self._count = self._all_bytes = 0
        self._current: Hashable | None = None  # the sender whose item runs now
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="aiedit-checker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def busy(self, sender: Hashable) -> bool:
        """Whether ``sender`` has work waiting or running here (its next request must wait behind it)."""
        with self._cond:
            return sender in self._queues or sender == self._current

    def on_thread(self) -> bool:
        """Whether the caller is the checker's own thread (work there runs at once, never queued behind itself)."""
        return threading.current_thread() is self._thread

    def put(self, sender: Hashable, work: Callable[[], None], size: int = 0) -> bool:
        """Queue ``work`` (holding ``size`` bytes of its request) behind ``sender``'s earlier items; False (nothing
        queued) when a bound is reached."""
        with self._cond:
            q = self._queues.get(sender)
            mine = self._bytes.get(sender, 0)
            if (self._stop or self._count >= self.total or self._all_bytes + size > TOTAL_BYTES
                    or (q is not None and len(q) >= self.per_sender) or mine + size > PER_SENDER_BYTES):
                return False
            if q is None:
                q = self._queues[sender] = deque()
            q.append((work, size))
            self._bytes[sender] = mine + size
            self._count += 1
            self._all_bytes += size
            self._cond.notify()
            return True

    def _run(self) -> None:
        lower_priority()
        while True:
            with self._cond:
                while not self._queues and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                sender, q = next(iter(self._queues.items()))
                work, size = q.popleft()
                self._count -= 1
                self._all_bytes -= size
                del self._queues[sender]
                if q:
                    self._queues[sender] = q  # to the back: senders take turns
                    self._bytes[sender] -= size
                else:
                    del self._bytes[sender]
                self._current = sender
            try:
                work()
            except Exception:  # a bug must not stop the checker
                log.exception("unexpected error checking a request")
            finally:
                with self._cond:
                    self._current = None


NICE = 10  # the checker's scheduling priority below the answering thread's and the workers' (Linux: per thread)


def lower_priority() -> None:
    """Lower the calling thread's CPU priority where the OS has per-thread nice values (Linux): probing hostile files
    must not take CPU from answering other clients or from a running edit on a busy machine."""
    if not hasattr(os, "setpriority") or not hasattr(threading, "get_native_id") or os.uname().sysname != "Linux":
        return
    with contextlib.suppress(OSError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + NICE)
