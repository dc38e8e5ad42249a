"""Several workers behind one daemon: their names and states, and which queued job a free one takes.

``aiedit serve --devices cuda:0,cuda:1`` (or ``all``, or ``cpu,cpu``) starts one worker per entry, each with its own
loaded model (:class:`bridge.workers.local.Worker`); ``--ray`` starts one per Ray actor
(:mod:`bridge.workers.remote`). All of them take jobs from the daemon's one queue, so its order holds (interactive
before batch, first come first served). The one freedom left is *which* of the queued jobs a free worker takes: a
re-take (same model, source region, prompt, seed and stage settings, other η) is held back for the worker that ran
its stages 1-2 while that worker is expected to be free soon and still holds that model, because only that worker
has them in memory (a full fine-tune is never on disk); otherwise any worker takes it and reads the LoRA stages from
the on-disk stage cache the workers share. Likewise a job whose model another worker holds loaded (and this one
does not) is left to that worker while it is free or soon free: loading a model costs more than waiting a little.

Nothing here imports torch or Ray.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from bridge.jobs.protocol import key_model
from bridge.jobs.queue import Choose

HOLD_S = 15.0  # a re-take waits at most this long for the worker holding its stages ...
SOON_S = 10.0  # ... and only while that worker is idle or expected to finish its job within this many seconds
RECENT = 4  # re-take keys remembered per worker: the engine's in-memory stage cache holds the last 4
STATES = ("idle", "busy", "loading", "dead")

# Model loading builds modules and imports lazily-loaded parts of transformers/diffusers; two threads doing it
# at once is not something those libraries promise to support, so local workers load one at a time.
LOAD_LOCK = threading.Lock()


class DeviceError(ValueError):
    """A ``--devices`` value that cannot be served (one line for the console)."""


def parse_devices(spec: str | None, default: str | None = None) -> list[str | None]:
    """The device of each worker: ``"cuda:0,cuda:1"``, ``"cpu,cpu"``, ``"all"`` (every visible CUDA GPU) or None
    (one worker on ``default``, which may itself be None = CUDA when available, else the CPU)."""
    if spec is None or not spec.strip():
        return [default]
    if spec.strip() == "all":
        import torch  # only for "all": counting GPUs needs it (the workers import it anyway)

        n = torch.cuda.device_count()
        if n == 0:
            raise DeviceError("--devices all: no CUDA GPU is visible here; name the devices (e.g. --devices cpu)")
        return [f"cuda:{i}" for i in range(n)]
    out: list[str | None] = []
    for part in spec.split(","):
        d = part.strip()
        if d == "cuda":
            d = "cuda:0"
        if d not in ("cpu", "mps") and not (d.startswith("cuda:") and d[5:].isdigit()):
            raise DeviceError(f"--devices: {part.strip()!r} is not a device (cpu, cuda, cuda:N, mps; or all)")
        out.append(d)
    if len(out) > 64:
        raise DeviceError("--devices: at most 64 workers")
    return out


def worker_names(devices: list[str | None], host: str | None = None) -> list[str]:
    """``"<device>@<host>"`` per worker, unique: a device named more than once is numbered (``cpu:0``, ``cpu:1``).
    A worker on the default device is ``"auto@host"`` until its model has loaded and it knows its device."""
    host = host or socket.gethostname()
    labels = ["cuda:0" if d == "cuda" else d or "auto" for d in devices]
    return [f"{label}:{labels[:i].count(label)}@{host}" if labels.count(label) > 1 and ":" not in label
            else f"{label}@{host}" for i, label in enumerate(labels)]


@dataclass(eq=False)
class Slot:
    """One worker as the scheduler sees it. Written by its worker thread, read by others (plain attribute
    writes; decisions that combine several read them under :attr:`Pool._lock`)."""

    name: str
    state: str = "loading"
    job: str | None = None
    progress: float = 0.0  # of the running job, as the worker last reported it
    started: float = 0.0  # time.monotonic() when the running job started
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT))
    models: tuple[str, ...] = ()  # the models it holds loaded, least recently used first
    extra: dict[str, Any] = field(default_factory=dict)  # more fields for daemon.json (e.g. the Ray actor)


class Pool:
    """The workers' slots and the choice of job per free worker (see the module doc)."""

    def __init__(self) -> None:
        self.slots: list[Slot] = []
        self._lock = threading.Lock()
        self._held: dict[str, float] = {}  # job id -> when a worker first held back from it
        self._retried: set[str] = set()  # jobs already run again after their (remote) worker died

    def add(self, name: str) -> Slot:
        slot = Slot(name)
        with self._lock:
            self.slots.append(slot)
        return slot

    def info(self) -> list[dict[str, Any]]:
        """daemon.json's ``workers``: ``[{"name", "state", "job", "models"}, ...]``."""
        with self._lock:
            return [{"name": s.name, "state": s.state, "job": s.job, "models": list(s.models), **s.extra}
                    for s in self.slots]

    def loaded(self) -> set[str]:
        """The models some live worker holds (daemon.json's ``models[].loaded``)."""
        with self._lock:
            return {m for s in self.slots if s.state != "dead" for m in s.models}

    def set_models(self, slot: Slot, names: list[str]) -> None:
        """The models ``slot`` holds now; the re-take keys of a model it evicted are forgotten with it (its stages
        in memory went with the model)."""
        with self._lock:
            slot.models = tuple(names)
            for key in [k for k in slot.recent if key_model(k) not in slot.models]:
                slot.recent.remove(key)

    def set_state(self, slot: Slot, state: str) -> None:
        with self._lock:
            slot.state = state
            if state != "busy":
                slot.job, slot.progress = None, 0.0

    def chooser(self, slot: Slot) -> Choose:
        """What ``slot`` takes from the queue (see :meth:`bridge.jobs.queue.JobQueue.get`); marks it busy with it."""

        def choose(order: list[tuple[str, str | None]]) -> str | None:
            now = time.monotonic()
            with self._lock:
                if slot.state not in ("idle", "busy"):
                    return None
                for jid, key in order:
                    holder = self._holder(key, slot) or self._model_holder(key_model(key), slot)
                    if holder is not None and (holder.state == "idle" or self._soon(holder, now)):
                        first = self._held.setdefault(jid, now)
                        if now - first < HOLD_S:
                            continue  # leave it to the worker that has its stages
                    self._held.pop(jid, None)
                    if len(self._held) > 1000:
                        self._held = {j: t for j, t in self._held.items() if now - t < HOLD_S}
                    slot.state, slot.job, slot.progress, slot.started = "busy", jid, 0.0, now
                    if key is not None:
                        if key in slot.recent:
                            slot.recent.remove(key)
                        slot.recent.append(key)
                    return jid
                return None

        return choose

    def retry_once(self, jid: str) -> bool:
        """True the first time a job's worker dies under it (run it again), False the second (fail it)."""
        with self._lock:
            if jid in self._retried:
                return False
            self._retried.add(jid)
            return True

    def release(self, slot: Slot) -> None:
        """The slot's job ended (or the job it chose was cancelled before it started): it is free again."""
        with self._lock:
            if slot.state == "busy":
                slot.state, slot.job, slot.progress = "idle", None, 0.0

    def _holder(self, key: str | None, asking: Slot) -> Slot | None:
        """Another live worker that ran stages 1-2 of ``key`` most recently, if any (None when it is ``asking``)."""
        if key is None:
            return None
        best: Slot | None = None
        for s in self.slots:
            if key in s.recent and s.state in ("idle", "busy") and (best is None or s.started > best.started):
                best = s
        return None if best is asking else best

    def _model_holder(self, model: str | None, asking: Slot) -> Slot | None:
        """Another live worker holding ``model`` loaded when ``asking`` does not (None otherwise): the idle one
        first, else the one that started its job first."""
        if model is None or model in asking.models:
            return None
        holders = [s for s in self.slots if s is not asking and s.state in ("idle", "busy") and model in s.models]
        return min(holders, key=lambda s: (s.state != "idle", s.started), default=None)

    @staticmethod
    def _soon(s: Slot, now: float) -> bool:
        """Whether a busy worker is expected to be free within :data:`SOON_S` (its job's elapsed time scaled by
        the progress still to make)."""
        if s.state != "busy" or s.progress < 0.05:  # too early to tell
            return False
        return (now - s.started) * (1.0 - s.progress) / s.progress <= SOON_S
