"""Cache of stage 1-2 results, so a re-take with other η values runs stage 3 only.

Keyed by the model, the exact audio the model sees (content hash) and every parameter that shapes stages 1-2.
LoRA results are small (adapter weights + e_opt) and go to disk when a folder is given; a full fine-tune's state
is a whole UNet (1.7-3.5 GB for real models), so it is kept in memory only, and only the most recent one: with the
stages' single pretrained copy that bounds full mode to two UNet states in host RAM.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from engine.models.base import Conditioning
from engine.stages import Tuning


def cache_key(model_name: str, audio: np.ndarray, stage_params: dict) -> str:
    h = hashlib.sha256()
    h.update(model_name.encode())
    h.update(np.ascontiguousarray(audio, dtype=np.float32).tobytes())
    h.update(json.dumps(stage_params, sort_keys=True).encode())
    return h.hexdigest()[:32]


class StageCache:
    """In-memory LRU of the last ``memory_items`` results, backed by ``folder`` for LoRA results."""

    def __init__(self, folder: str | Path | None = None, memory_items: int = 4) -> None:
        self.folder = Path(folder) if folder else None
        self.memory_items = memory_items
        self._mem: OrderedDict[str, tuple[Conditioning, Tuning | None]] = OrderedDict()

    def get(self, key: str) -> tuple[Conditioning, Tuning | None] | None:
        if key in self._mem:
            self._mem.move_to_end(key)
            return self._mem[key]
        if self.folder is not None:
            found = self._load(key)
            if found is not None:
                self._remember(key, found)
            return found
        return None

    def put(self, key: str, e_opt: Conditioning, tuning: Tuning | None) -> None:
        entry = (e_opt.detach().to("cpu"), tuning)
        self._remember(key, entry)
        if self.folder is not None and (tuning is None or tuning.mode == "lora"):
            self._save(key, *entry)

    def drop_full(self) -> None:
        """Forget every full fine-tune state (before training a new one, so two never coexist with it)."""
        for key in [k for k, (_, t) in self._mem.items() if t is not None and t.mode == "full"]:
            del self._mem[key]

    def _remember(self, key: str, entry: tuple[Conditioning, Tuning | None]) -> None:
        if entry[1] is not None and entry[1].mode == "full":
            self.drop_full()
        self._mem[key] = entry
        self._mem.move_to_end(key)
        while len(self._mem) > self.memory_items:
            self._mem.popitem(last=False)

    def _save(self, key: str, e_opt: Conditioning, tuning: Tuning | None) -> None:
        from safetensors.torch import save_file

        assert self.folder is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"e.{k}": v for k, v in e_opt.state().items()}
        meta = {"mode": "none"}
        if tuning is not None:
            tensors.update({f"w.{k}": v.contiguous() for k, v in tuning.state.items()})
            meta = {"mode": tuning.mode, "rank": str(tuning.rank), "targets": json.dumps(tuning.target_modules)}
        # a unique temporary name: several workers of one daemon share the folder and may store one key at once
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".partial", dir=self.folder)
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=meta)
            os.replace(tmp, self.folder / f"{key}.safetensors")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _load(self, key: str) -> tuple[Conditioning, Tuning | None] | None:
        from safetensors import safe_open

        assert self.folder is not None
        path = self.folder / f"{key}.safetensors"
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception:  # a corrupt cache entry is a miss, never a failed edit
            path.unlink(missing_ok=True)
            return None
        e_opt = Conditioning.from_state({k[2:]: v for k, v in tensors.items() if k.startswith("e.")})
        if meta.get("mode", "none") == "none":
            return e_opt, None
        state = {k[2:]: v for k, v in tensors.items() if k.startswith("w.")}
        return e_opt, Tuning(meta["mode"], state, int(meta.get("rank", "0")),
                             tuple(json.loads(meta.get("targets", "[]"))))


def to_device(entry: tuple[Conditioning, Tuning | None], device: torch.device,
              dtype: torch.dtype) -> tuple[Conditioning, Tuning | None]:
    return entry[0].to(device, dtype), entry[1]
