"""The on-disk stage cache against what another process can leave at an entry (issue 26, findings 8, 9, 13, 15):
entries are copied into memory (truncating the file later cannot SIGBUS the process), regular files only (a FIFO
cannot freeze it), a damaged entry is a miss and is removed, the folder stays under its byte cap. The real
StageCache on real files; the two hazards that kill or freeze a process run in a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.cache import StageCache
from engine.cache_files import CacheFiles
from engine.models.base import Conditioning
from engine.stages import Tuning

ROOT = Path(__file__).resolve().parents[1]


def _entry(seed: int = 0, weights: int = 64) -> tuple[Conditioning, Tuning]:
    g = torch.Generator().manual_seed(seed)
    e = Conditioning({"prompt_embeds": torch.randn(1, 4, 8, generator=g)}, {"prompt_embeds": torch.ones(1, 4)})
    state = {"unet.a.lora_A.weight": torch.randn(4, weights, generator=g),
             "unet.a.lora_B.weight": torch.randn(weights, 4, generator=g)}
    return e, Tuning("lora", state, 4, ("to_q", "to_v"))


def _stored(folder: Path, key: str = "k" * 32, **kw) -> Path:
    StageCache(folder).put(key, *_entry(**kw))
    path = folder / f"{key}.safetensors"
    assert path.is_file()
    return path


def _child(code: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})


def test_an_entry_truncated_after_it_was_read_leaves_its_tensors_readable(tmp_path):
    """Finding 8: the tensors of a loaded entry stayed mapped to its file; truncating it killed the daemon (SIGBUS)."""
    code = f"""
import os, sys, torch
sys.path.insert(0, {str(ROOT / 'tests')!r})
from test_stage_cache_files import _stored
from engine.cache import StageCache
folder = {str(tmp_path / 'cache')!r}
from pathlib import Path
path = _stored(Path(folder), weights=1 << 18)   # 4 MiB of weights per matrix: many pages
e, tuning = StageCache(folder).get("k" * 32)      # a fresh cache: read from disk
os.truncate(path, 0)                             # another process truncates the entry
total = sum(float(v.double().sum()) for v in tuning.state.values()) + float(e.tensors["prompt_embeds"].sum())
print("survived", total == total)
"""
    r = _child(code)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert "survived True" in r.stdout


def test_a_fifo_at_an_entry_is_a_miss_and_is_removed_without_blocking(tmp_path):
    """Finding 9: opening a FIFO planted at an entry blocked the process for ever (no pong, SIGTERM ignored)."""
    folder = tmp_path / "cache"
    path = _stored(folder)
    path.unlink()
    os.mkfifo(path)
    code = f"""
from engine.cache import StageCache
print("got", StageCache({str(folder)!r}).get("k" * 32))
"""
    try:
        r = _child(code, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("reading a FIFO at a cache entry blocked")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "got None" in r.stdout
    assert not path.exists() and not path.is_symlink()


def _set_meta(path: Path, **changes: str) -> None:
    """Rewrite an entry's metadata in its header (a damaged or hand-made entry)."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header["__metadata__"].update(changes)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n:])


def _nan_weights(folder: Path, key: str) -> None:
    from safetensors.torch import save_file

    e, t = _entry()
    t.state["unet.a.lora_A.weight"][0, 0] = float("nan")
    tensors = {f"e.{k}": v for k, v in e.state().items()} | {f"w.{k}": v for k, v in t.state.items()}
    save_file(tensors, str(folder / f"{key}.safetensors"),
              metadata={"mode": "lora", "rank": "4", "targets": json.dumps(["to_q"])})


def _inf_embedding(folder: Path, key: str) -> None:
    from safetensors.torch import save_file

    e, t = _entry()
    e.tensors["prompt_embeds"][0, 0, 0] = float("inf")
    tensors = {f"e.{k}": v for k, v in e.state().items()} | {f"w.{k}": v for k, v in t.state.items()}
    save_file(tensors, str(folder / f"{key}.safetensors"),
              metadata={"mode": "lora", "rank": "4", "targets": json.dumps(["to_q"])})


DAMAGE = {
    "bad rank": lambda folder, key: _set_meta(folder / f"{key}.safetensors", rank="four"),
    "targets not JSON": lambda folder, key: _set_meta(folder / f"{key}.safetensors", targets="to_q, to_v"),
    "unknown mode": lambda folder, key: _set_meta(folder / f"{key}.safetensors", mode="full"),
    "a folder": lambda folder, key: ((folder / f"{key}.safetensors").unlink(),
                                     (folder / f"{key}.safetensors" / "inside").mkdir(parents=True)),
    "a link": lambda folder, key: ((folder / f"{key}.safetensors").unlink(),
                                   (folder / f"{key}.safetensors").symlink_to(folder.parent / "elsewhere")),
    "truncated": lambda folder, key: os.truncate(folder / f"{key}.safetensors", 100),
    "NaN weights": _nan_weights,
    "Inf embedding": _inf_embedding,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_entry_is_a_miss_and_is_removed(tmp_path, damage):
    """Finding 13: a bad rank, targets that are not JSON or a folder at the entry failed every later re-take, and
    NaN weights gave silent takes marked done. Now each is a miss, the entry is removed, and the next result is
    stored and read back."""
    folder, key = tmp_path / "cache", "d" * 32
    _stored(folder, key)
    (tmp_path / "elsewhere").write_bytes(b"not yours")
    DAMAGE[damage](folder, key)
    assert StageCache(folder).get(key) is None
    path = folder / f"{key}.safetensors"
    assert not path.exists() and not path.is_symlink()
    assert (tmp_path / "elsewhere").read_bytes() == b"not yours"  # a link is removed, never followed
    StageCache(folder).put(key, *_entry(seed=3))
    _e, t = StageCache(folder).get(key)
    assert torch.equal(t.state["unet.a.lora_A.weight"], _entry(seed=3)[1].state["unet.a.lora_A.weight"])
    assert t.rank == 4 and t.target_modules == ("to_q", "to_v")


def test_a_result_that_is_not_finite_is_not_stored(tmp_path):
    e, t = _entry()
    t.state["unet.a.lora_B.weight"][1, 1] = float("nan")
    cache = StageCache(tmp_path / "cache")
    cache.put("n" * 32, e, t)
    assert cache.get("n" * 32) is None and not any((tmp_path / "cache").glob("*.safetensors"))


def test_the_folder_stays_under_its_cap_dropping_the_least_recently_used(tmp_path):
    """Finding 15: the disk cache had no size cap. Now it keeps the most recently used entries within the cap."""
    folder = tmp_path / "cache"
    one = len((_stored(folder, "0" * 32)).read_bytes())
    (folder / f"{'0' * 32}.safetensors").unlink()
    cache = StageCache(folder, max_bytes=int(2.5 * one))
    keys = [str(i) * 32 for i in range(4)]
    for i, k in enumerate(keys):
        cache.put(k, *_entry(seed=i))
        past = time.time() - 100 + i  # distinct, ordered access times on any file system
        os.utime(folder / f"{k}.safetensors", (past, past))
        if i == 1:
            assert StageCache(folder, max_bytes=int(2.5 * one)).get(keys[0]) is not None  # a use: now the newest
            os.utime(folder / f"{keys[0]}.safetensors", (past + 0.5, past + 0.5))
    left = sorted(p.stem for p in folder.glob("*.safetensors"))
    assert sum(p.stat().st_size for p in folder.glob("*.safetensors")) <= 2.5 * one
    assert left == sorted([keys[3], keys[2]]) or left == sorted([keys[3], keys[0]]), left
    assert keys[1] not in left  # the least recently used went first


def test_the_sweep_at_start_removes_what_killed_writers_left_and_trims_to_the_cap(tmp_path):
    folder = tmp_path / "cache"
    _stored(folder, "a" * 32)
    _stored(folder, "b" * 32)
    stale = folder / f".{'c' * 32}.x1y2.partial"
    stale.write_bytes(b"half an entry")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    os.utime(folder / f"{'a' * 32}.safetensors", (old, old))
    fresh = folder / f".{'d' * 32}.x3y4.partial"  # another worker writing right now
    fresh.write_bytes(b"being written")
    size = (folder / f"{'b' * 32}.safetensors").stat().st_size
    CacheFiles(folder, max_bytes=size).sweep()
    assert not stale.exists() and fresh.exists()
    assert sorted(p.name for p in folder.glob("*.safetensors")) == [f"{'b' * 32}.safetensors"]
