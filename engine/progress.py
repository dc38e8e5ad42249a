"""Progress reports and cooperative cancellation: how a caller watches and stops a long edit.

Pure Python (no torch) so the daemon can use these types on its answering path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from engine.errors import Cancelled

STAGES = ("preparing", "embedding", "finetune", "sampling", "decoding", "scoring")


@dataclass(frozen=True)
class Progress:
    """``step`` of ``total`` done in ``stage``; ``window`` / ``windows`` when a long clip is edited in pieces."""

    stage: str
    step: int
    total: int
    window: int = 0
    windows: int = 1

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 1.0


ProgressFn = Callable[[Progress], None]


class CancelToken:
    """Set from any thread; the engine checks it between steps and raises :class:`Cancelled`."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str = "cancelled") -> None:
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled(self.reason or "cancelled")
