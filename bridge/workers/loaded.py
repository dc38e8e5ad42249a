"""The models one worker keeps loaded: up to ``--max-models``, the least recently used evicted first, never one a
running edit uses. Shared by the local worker (:mod:`bridge.workers.local`) and the Ray actor
(:mod:`bridge.workers.remote`), so both serve several models the same way.

Loading is what costs (seconds to minutes, and the model's memory); a model stays loaded after its job so the next
job on it starts at once. Eviction comes *before* the next load, and frees what it can at once: the editor is
dropped, a full garbage collection runs (the worker froze the loaded models' objects out of the collector after
loading, so it unfreezes them first) and, on CUDA, the allocator's cached blocks go back to the driver
(``torch.cuda.empty_cache``). Without ``--max-models`` the number comes from the free memory the worker sees before
its first load (:func:`default_max_models`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

log = logging.getLogger("aiedit.worker")


class LoadedModels:
    """An LRU of loaded editors by model name.

    ``load(name)`` loads one (raising the engine's one-line errors), ``limit`` is the most kept (None: from
    ``default_limit()``, asked once, before the first load), ``on_evict(name, editor)`` runs as one leaves (before
    the memory is freed), ``on_change(names)`` after every load or eviction with the names held, least recent
    first. Thread-safe: a Ray actor answers on several threads (one edit at a time, but still)."""

    def __init__(self, load: Callable[[str], Any], *, limit: int | None = None,
                 default_limit: Callable[[], int] | None = None,
                 on_evict: Callable[[str, Any], None] | None = None,
                 on_change: Callable[[list[str]], None] | None = None) -> None:
        if limit is not None and limit < 1:
            raise ValueError("--max-models must be at least 1")
        self._load, self.limit, self._default_limit = load, limit, default_limit
        self._on_evict, self._on_change = on_evict, on_change
        self._editors: OrderedDict[str, Any] = OrderedDict()
        self._in_use: dict[str, int] = {}
        self._lock = threading.RLock()
        self.loads = self.evictions = 0

    def names(self) -> list[str]:
        with self._lock:
            return list(self._editors)

    def has(self, name: str) -> bool:
        with self._lock:
            return name in self._editors

    @contextlib.contextmanager
    def use(self, name: str) -> Iterator[Any]:
        """The editor of ``name``, loaded if it is not (evicting first), held in use (never evicted) until the
        block ends."""
        editor = self.acquire(name)
        try:
            yield editor
        finally:
            self.release(name)

    def acquire(self, name: str) -> Any:
        with self._lock:
            if name in self._editors:
                self._editors.move_to_end(name)
                self._in_use[name] = self._in_use.get(name, 0) + 1
                return self._editors[name]
            if self.limit is None:
                self.limit = max(1, self._default_limit() if self._default_limit else 1)
            self._make_room(self.limit - 1)
            editor = self._load(name)
            self._editors[name] = editor
            self._in_use[name] = self._in_use.get(name, 0) + 1
            self.loads += 1
            names = list(self._editors)
        self._changed(names)
        return editor

    def release(self, name: str) -> None:
        with self._lock:
            n = self._in_use.get(name, 0) - 1
            if n > 0:
                self._in_use[name] = n
            else:
                self._in_use.pop(name, None)

    def _make_room(self, keep: int) -> None:
        """Evict the least recently used models not in use until at most ``keep`` remain (under the lock)."""
        evicted = False
        for name in list(self._editors):
            if len(self._editors) <= keep:
                break
            if self._in_use.get(name):
                continue  # a running edit's model stays, even over the limit
            editor = self._editors.pop(name)
            log.info("evicting model %s (the least recently used; --max-models %d)", name, self.limit)
            if self._on_evict is not None:
                self._on_evict(name, editor)
            del editor
            self.evictions += 1
            evicted = True
        if evicted:
            free_memory()
            self._changed(list(self._editors))

    def _changed(self, names: list[str]) -> None:
        if self._on_change is not None:
            self._on_change(names)


def free_memory() -> None:
    """Give an evicted model's memory back: a full collection with the frozen objects included (the worker freezes
    loaded models' objects out of the collector, see :mod:`bridge.workers.local`), then freeze the survivors again;
    where CUDA is in use, the allocator's cached blocks go back to the driver (whatever ``--device`` said: unset, it
    may be CUDA)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def default_max_models(free_gib: float | None, models: Iterable[tuple[str, str | None]], *, gpu: bool,
                       precision: str = "auto") -> int:
    """How many models fit in ``free_gib`` beside one running edit: the largest of ``models`` (name, family) edits
    (``engine.models.catalog.edit_gib``) and the rest are as many more of its size
    (``engine.models.catalog.resident_gib``); at least 1, at most one per model. 1 when the free memory is unknown."""
    from engine.models.catalog import edit_gib, resident_gib

    models = list(models)
    if free_gib is None or not models:
        return 1
    biggest = max(models, key=lambda m: resident_gib(m[0], m[1], gpu=gpu, precision=precision))
    weights = resident_gib(*biggest, gpu=gpu, precision=precision)
    more = math.floor((free_gib - edit_gib(*biggest, gpu=gpu, precision=precision)) / max(weights, 1e-3))
    return max(1, min(len(models), 1 + more))


def free_gib(device: str | None) -> float | None:
    """Free memory where a worker's models go: the GPU's (CUDA devices; torch is imported already there) or the
    host's available RAM; None when it cannot be told."""
    if device is not None and device.startswith("cuda"):
        try:
            import torch

            return float(torch.cuda.mem_get_info(torch.device(device))[0]) / 2**30
        except Exception:  # no driver, a device that vanished: the caller keeps one model
            return None
    return host_available_gib()


def host_available_gib() -> float | None:
    """The host's available RAM (``MemAvailable`` on Linux, else free pages), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 / 2**30
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (AttributeError, OSError, ValueError):
        return None
