"""Engine speed on the tiny model: per-step cost of each stage, batched vs sequential η, cold vs cached.

    python -m benchmarks.bench_engine [--seconds 10] [--steps 20] [--device cpu|cuda] [--model tiny]

Ratios are measured in one run on one machine, so they compare; absolute figures depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from engine.cache import StageCache
from engine.editor import Editor
from engine.models.registry import load_model
from engine.params import EditParams, EditRequest, Region
from engine.stages import finetune, optimize_embedding, sample


def _timed(fn, repeat: int = 1) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeat


def _clip(seconds: float, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    noise = 0.01 * np.random.default_rng(0).standard_normal(t.size)
    return 0.4 * np.sin(2 * np.pi * 440 * t) * ((t % 0.5) < 0.1) + noise


def machine() -> str:
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    return f"{dev}, {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench_engine")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=20, help="optimisation steps timed per stage")
    ap.add_argument("--etas", type=int, default=5)
    ap.add_argument("--sample-steps", type=int, default=25)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="tiny")
    a = ap.parse_args(argv)

    m = load_model(a.model, device=a.device)
    x = torch.from_numpy(_clip(a.seconds).astype(np.float32))
    frames = m.frames_for(len(x))
    wave = torch.zeros(1, frames * m.mel.hop_length)
    wave[0, : len(x)] = x
    z0 = m.encode_audio(wave.to(m.device))
    e = m.encode_prompt(["knocking on a wooden door"])
    u = m.encode_prompt([""])
    rows: list[tuple[str, str]] = []

    s1 = _timed(lambda: optimize_embedding(m, z0, e, steps=a.steps, lr=2e-3, seed=0)) / a.steps
    rows.append(("stage 1 (embedding), per step", f"{s1 * 1e3:.1f} ms"))
    s2f = _timed(lambda: finetune(m, z0, e, mode="full", steps=a.steps, lr=1e-6, rank=8, seed=0)) / a.steps
    rows.append(("stage 2 full fine-tune, per step", f"{s2f * 1e3:.1f} ms"))
    s2l = _timed(lambda: finetune(m, z0, e, mode="lora", steps=a.steps, lr=1e-4, rank=8, seed=0)) / a.steps
    rows.append(("stage 2 LoRA, per step", f"{s2l * 1e3:.1f} ms  (full/LoRA = {s2f / s2l:.2f}x)"))

    conds = [e] * a.etas
    kw = dict(latent_shape=tuple(z0.shape[1:]), steps=a.sample_steps, guidance=2.5, seed=0)
    sample(m, conds[:1], u, **kw)  # warm-up
    tb = _timed(lambda: sample(m, conds, u, **kw))
    ts = _timed(lambda: [sample(m, [c], u, **kw) for c in conds])
    rows.append((f"stage 3, {a.etas} η batched ({a.sample_steps} steps, CFG)", f"{tb:.2f} s"))
    rows.append((f"stage 3, {a.etas} η one by one", f"{ts:.2f} s  (sequential/batched = {ts / tb:.2f}x)"))

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "clip.wav"
        sf.write(src, _clip(a.seconds, 44100), 44100)
        ed = Editor(m, None, StageCache(Path(tmp) / "cache"))
        p = EditParams("knocking on a wooden door", etas=(0.3, 0.6, 0.9), embed_steps=100, tune_steps=100,
                       sample_steps=a.sample_steps)
        cold = _timed(lambda: ed.edit(EditRequest(str(src), Region(), p)))
        warm = _timed(lambda: ed.edit(EditRequest(str(src), Region(), p.with_(etas=(0.2, 0.5)))))
    rows.append(("cold edit (100 + 100 steps, 3 η)", f"{cold:.2f} s"))
    rows.append(("cached re-take (2 η, stage 3 only)", f"{warm:.2f} s  (cold/cached = {cold / warm:.1f}x)"))
    if torch.cuda.is_available():
        rows.append(("peak GPU memory", f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"))
    rows.append(("peak process RSS", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"))

    print(f"\nengine benchmark — model {a.model}, {a.seconds:g} s clip, latent {tuple(z0.shape[1:])}")
    print(f"machine: {machine()}")
    width = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


if __name__ == "__main__":
    main()
