"""Cache of stage 1-2 results, so a re-take with other η values runs stage 3 only.

Keyed by the model, the exact audio the model sees (content hash) and every parameter that shapes stages 1-2.
LoRA results are small (adapter weights + e_opt) and go to disk when a folder is given; a full fine-tune's state
is a whole UNet (1.7-3.5 GB for real models), so it is kept in memory only, and only the most recent one: with the
stages' single pretrained copy that bounds full mode to two UNet states in host RAM.

The disk side (:mod:`engine.cache_files`) copies an entry into memory before it is parsed, so no tensor stays mapped
to a file another process may truncate; an entry that is not what this module wrote (a bad rank, targets that are
not JSON, weights that are not finite) is a miss and is removed, and a result that is not finite is never stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from engine.cache_files import CacheFiles
from engine.models.base import Conditioning
from engine.stages import Tuning

log = logging.getLogger("aiedit.engine")


def cache_key(model_name: str, audio: np.ndarray, stage_params: dict) -> str:
    h = hashlib.sha256()
    h.update(model_name.encode())
    h.update(np.ascontiguousarray(audio, dtype=np.float32).tobytes())
    h.update(json.dumps(stage_params, sort_keys=True).encode())
    return h.hexdigest()[:32]


class StageCache:
    """In-memory LRU of the last ``memory_items`` results, backed by ``folder`` for LoRA results (at most
    ``max_bytes`` on disk; default: see :func:`engine.cache_files.default_cap_bytes`)."""

    def __init__(self, folder: str | Path | None = None, memory_items: int = 4, max_bytes: int | None = None) -> None:
        self.folder = Path(folder) if folder else None
        self.files = CacheFiles(self.folder, max_bytes) if self.folder is not None else None
        self.memory_items = memory_items
        self._mem: OrderedDict[str, tuple[Conditioning, Tuning | None]] = OrderedDict()

    def get(self, key: str, check: Callable[[tuple[Conditioning, Tuning | None]], str | None] | None = None,
            ) -> tuple[Conditioning, Tuning | None] | None:
        """The result stored under ``key``, or None. ``check`` (see :func:`misfit`) says why an entry cannot serve
        the model at hand; such an entry is a miss and is forgotten, on disk too."""
        found = None
        if key in self._mem:
            self._mem.move_to_end(key)
            found = self._mem[key]
        elif self.files is not None:
            found = self._load(key)
            if found is not None:
                self._remember(key, found)
        if found is not None and check is not None and (why := check(found)):
            self._mem.pop(key, None)
            if self.files is not None:
                self.files.discard(key, why)
            return None
        return found

    def put(self, key: str, e_opt: Conditioning, tuning: Tuning | None) -> None:
        """Keep a result; a disk that cannot take it (full, read-only) costs the next re-take its stages, never
        this edit. Results that are not finite are not kept at all."""
        entry = (e_opt.detach().to("cpu"), tuning)
        if not _finite(entry):
            return
        self._remember(key, entry)
        if self.files is not None and (tuning is None or tuning.mode == "lora"):
            try:
                self.files.write(key, _encode(*entry))
            except OSError as exc:
                log.warning("stage cache: cannot store %s in %s (%s); the edit goes on", key, self.folder,
                            exc.strerror or exc)

    def drop_full(self) -> None:
        """Forget every full fine-tune state (before training a new one, so two never coexist with it)."""
        for key in [k for k, (_, t) in self._mem.items() if t is not None and t.mode == "full"]:
            del self._mem[key]

    def sweep(self) -> None:
        """Clear what killed writers left and trim the folder to its cap (at start)."""
        if self.files is not None:
            self.files.sweep()

    def _remember(self, key: str, entry: tuple[Conditioning, Tuning | None]) -> None:
        if entry[1] is not None and entry[1].mode == "full":
            self.drop_full()
        self._mem[key] = entry
        self._mem.move_to_end(key)
        while len(self._mem) > self.memory_items:
            self._mem.popitem(last=False)

    def _load(self, key: str) -> tuple[Conditioning, Tuning | None] | None:
        assert self.files is not None
        data = self.files.read(key)
        if data is None:
            return None
        try:
            return _decode(data)
        except DamagedEntry as exc:  # a miss, never a failed edit; and gone, so the next run stores a good one
            self.files.discard(key, str(exc))
            return None


class DamagedEntry(Exception):
    """A cache entry that cannot be what :func:`_encode` wrote."""


def _encode(e_opt: Conditioning, tuning: Tuning | None) -> bytes:
    from safetensors.torch import save

    tensors = {f"e.{k}": v for k, v in e_opt.state().items()}
    meta = {"mode": "none"}
    if tuning is not None:
        tensors.update({f"w.{k}": v.detach().cpu().contiguous() for k, v in tuning.state.items()})
        meta = {"mode": tuning.mode, "rank": str(tuning.rank), "targets": json.dumps(list(tuning.target_modules))}
    return save(tensors, metadata=meta)


def _decode(data: bytes) -> tuple[Conditioning, Tuning | None]:
    """An entry's bytes → (e_opt, tuning), every tensor copied into memory of its own; DamagedEntry otherwise."""
    from safetensors.torch import load

    meta = _metadata(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # frombuffer on read-only bytes: the tensors are cloned right away
            tensors = {k: v.clone() for k, v in load(data).items()}
    except Exception as exc:  # safetensors' own parse errors
        raise DamagedEntry(f"unreadable ({type(exc).__name__})") from None
    e_state = {k[2:]: v for k, v in tensors.items() if k.startswith("e.")}
    if not any(k.startswith("t.") for k in e_state):
        raise DamagedEntry("no embedding")
    e_opt = Conditioning.from_state(e_state)
    mode = meta.get("mode", "none")
    tuning = None
    if mode == "lora":
        rank, targets = meta.get("rank", ""), meta.get("targets", "")
        if not (rank.isascii() and rank.isdigit() and 0 < int(rank) <= 4096):
            raise DamagedEntry(f"bad rank {rank[:20]!r}")
        try:
            names = json.loads(targets)
        except ValueError:
            raise DamagedEntry("targets are not JSON") from None
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise DamagedEntry("targets are not a list of module names")
        state = {k[2:]: v for k, v in tensors.items() if k.startswith("w.")}
        if not state:
            raise DamagedEntry("no adapter weights")
        tuning = Tuning("lora", state, int(rank), tuple(names))
    elif mode != "none":
        raise DamagedEntry(f"mode {mode[:20]!r}")
    entry = (e_opt, tuning)
    if not _finite(entry):
        raise DamagedEntry("weights that are not finite (NaN or Inf)")
    return entry


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors buffer (its header: 8-byte little-endian length, then JSON)."""
    if len(data) < 8:
        raise DamagedEntry("truncated")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8 or n > 100_000_000:
        raise DamagedEntry("truncated header")
    try:
        header = json.loads(data[8:8 + n])
    except ValueError:
        raise DamagedEntry("header is not JSON") from None
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else None
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise DamagedEntry("bad metadata")
    return meta


def misfit(entry: tuple[Conditioning, Tuning | None], unet: torch.nn.Module, e_target: Conditioning) -> str | None:
    """Why a cached result cannot be applied to this model (its embedding's names or shapes differ from the
    prompt's, a LoRA weight names no module of ``unet`` or has another shape than its rank and that module give),
    or None. Checked before use, so a damaged entry costs a re-run of its stages, not every re-take."""
    e_opt, tuning = entry
    if set(e_opt.tensors) != set(e_target.tensors) or any(
            e_opt.tensors[k].shape[1:] != e_target.tensors[k].shape[1:] for k in e_target.tensors):
        return "its embedding does not fit this model"
    if tuning is None or tuning.mode != "lora":
        return None
    modules = dict(unet.named_modules())
    for name, value in tuning.state.items():
        path, sep, rest = name.rpartition(".lora_")
        weight = getattr(modules.get(path), "weight", None)
        if not sep or not isinstance(weight, torch.Tensor) or value.dim() < 2 or weight.dim() < 2:
            return f"its adapter weight {name[:80]} names no layer of this model"
        want = ((tuning.rank, weight.shape[1]) if rest.startswith("A.") else
                (weight.shape[0], tuning.rank) if rest.startswith("B.") else None)
        if want is None or tuple(value.shape[:2]) != want:
            return f"its adapter weight {name[:80]} does not fit rank {tuning.rank} on this model"
    return None


def _finite(entry: tuple[Conditioning, Tuning | None]) -> bool:
    e_opt, tuning = entry
    tensors = [*e_opt.tensors.values(), *(tuning.state.values() if tuning is not None else ())]
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def to_device(entry: tuple[Conditioning, Tuning | None], device: torch.device,
              dtype: torch.dtype) -> tuple[Conditioning, Tuning | None]:
    return entry[0].to(device, dtype), entry[1]
