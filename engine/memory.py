"""How much memory one edit needs beyond its loaded model, estimated from the job's shape before it runs.

Pure Python (no torch, no numpy): the daemon calls it in its limits check, on the answering path, and refuses a job
that cannot fit (``aiedit serve --max-job-mb``) before it is queued.

What an edit holds (engine.editor), in bytes, for F input frames of C channels at rate R, n takes, and the model
hearing Fm = F x Rm / R frames of Cm channels at its rate Rm:

- the region, read once as float32: F C 4, for the whole job;
- preparing: the model's input mixed, resampled and normalised in float64, then kept as float32: ~ Fm Cm (8 + 8 + 4);
- the windows: the model input (Fm Cm 4) and one float32 buffer per take at the model's rate (n Fm Cm 4) that each
  window's decoded output is crossfaded into, plus the stages' own working memory on one window (the model row
  below: training, sampling per take, a full fine-tune's weights);
- assembling: the buffers and the finished float32 takes (n x the larger of Fm Cm 4 and F C 4), plus one take being
  made in float64, two arrays of it alive at a time (at the model's rate, resampled to the input's, mapped to its
  channels, clipped, made float32): the largest of Fm Cm 8 + F Cm 8, F Cm 8 + F C 8 and F C 12;
- a fixed cost per job (prompt encodings, CLAP scoring, the allocator's growth).

The stages' working memory is added to the largest of those, not only to the windows' term: the allocator keeps
much of it after the stages end.

The per-model figures are one table keyed by family (a shipped toy model has its own row, being far smaller than
its family's real checkpoints); a new family adds its row. Rows marked ``measured`` were fitted with
``python -m benchmarks.bench_memory`` (docs/performance.md states how close the estimate comes); the others are
estimates from the architectures, for a CPU worker (on a GPU the stages' working memory is the GPU's, not the
host's, and only the audio terms and the fixed cost count).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

MB = 1_000_000


@dataclass(frozen=True)
class ModelMemory:
    """One model's memory figures (MB) besides its rate and channels."""

    sample_rate: int  # what the model hears
    channels: int
    window_s: float  # the longest stretch it edits at once; longer clips are edited window by window
    latent_per_s: float  # latent elements per second of audio (its autoencoder)
    train_mb: float  # stages 1-2 (embedding, LoRA) on one window, on the CPU; zeta's inversion costs as much
    take_mb: float  # sampling on one window, per take in the batch, on the CPU
    full_mb: float  # more for a full fine-tune: the snapshot, gradients and Adam state of the whole denoiser
    fixed_mb: float  # per job, whatever its length
    measured: bool = False


# Keyed by family (engine.models.catalog), and by name for the shipped toy models.
MODELS: dict[str, ModelMemory] = {
    # measured (bench_memory, docs/performance.md)
    "toy": ModelMemory(16000, 1, 2.56, 3200, train_mb=30, take_mb=4, full_mb=5, fixed_mb=70, measured=True),
    "toy-flow": ModelMemory(44100, 2, 2.56, 2756, train_mb=10, take_mb=8, full_mb=5, fixed_mb=40, measured=True),
    # the tests' random-weight models (as small as the toys)
    "tiny": ModelMemory(16000, 1, 10.24, 3200, train_mb=30, take_mb=4, full_mb=5, fixed_mb=70),
    "tiny-sa3": ModelMemory(44100, 2, 4.0, 2756, train_mb=10, take_mb=8, full_mb=5, fixed_mb=40),
    "tiny-ace": ModelMemory(48000, 2, 600.0, 1600, train_mb=10, take_mb=8, full_mb=5, fixed_mb=40),
    # real checkpoints (the largest of each family), estimated: 16 kHz mono, 10.24 s windows, 3,200 latents/s
    "audioldm": ModelMemory(16000, 1, 10.24, 3200, train_mb=2500, take_mb=250, full_mb=9000, fixed_mb=400),
    "audioldm2": ModelMemory(16000, 1, 10.24, 3200, train_mb=4000, take_mb=400, full_mb=14000, fixed_mb=600),
    "tango": ModelMemory(16000, 1, 10.24, 3200, train_mb=3500, take_mb=350, full_mb=13000, fixed_mb=600),
    # Stable Audio 3 medium: 44.1 kHz stereo, up to 30 s at once (engine.models.stable_audio3)
    "stable-audio-3": ModelMemory(44100, 2, 30.0, 1378, train_mb=6000, take_mb=600, full_mb=17000, fixed_mb=800),
    # ACE-Step 1.5: 48 kHz stereo, 25 latent frames of 64 a second, one window up to 10 minutes, a 2.4 B DiT
    "ace-step": ModelMemory(48000, 2, 600.0, 1600, train_mb=12000, take_mb=1200, full_mb=38000, fixed_mb=1000),
}
# A model whose family cannot be told before it loads (a folder that is not there, a family without a row): its
# audio at the largest rate and channel count, no guess at its stages — a job for a model that will fail to load
# should be told so by the worker, not refused for memory on a guess. Every known family has its row (a test says so).
UNKNOWN = ModelMemory(48000, 2, 600.0, 0, train_mb=0, take_mb=0, full_mb=0, fixed_mb=0)


# Modes that only sample (no stages 1-2, no inversion): the rest cost a window's training memory as well.
SAMPLING_ONLY = ("sdedit", "flowedit", "repaint", "cover")


@dataclass(frozen=True)
class JobShape:
    frames: int  # of the region, at the source's rate
    channels: int
    sample_rate: int
    takes: int  # strengths (η values)
    mode: str = "lora"


@dataclass(frozen=True)
class Estimate:
    total: int  # bytes
    parts: dict[str, int]

    @property
    def mb(self) -> float:
        return self.total / MB


def model_memory(model: str | None, family: str | None = None) -> ModelMemory:
    """The row for a model name (the toys), else its family, else :data:`UNKNOWN`."""
    for key in (model, family):
        if key is not None and key in MODELS:
            return MODELS[key]
    return UNKNOWN


def estimate_job_bytes(shape: JobShape, model: str | ModelMemory, device: str = "cpu") -> Estimate:
    """The peak memory of one job beyond its loaded model (see the module doc for the terms)."""
    m = model if isinstance(model, ModelMemory) else model_memory(model)
    f, c, n = max(0, int(shape.frames)), max(1, int(shape.channels)), max(1, int(shape.takes))
    fm = math.ceil(f * m.sample_rate / max(1, int(shape.sample_rate)))
    cm = m.channels
    src = f * c * 4
    prepare = fm * cm * (8 + 8 + 4)
    buffers = n * fm * cm * 4
    windows = fm * cm * 4 + buffers
    one_take = max(fm * cm * 8 + f * cm * 8, f * cm * 8 + f * c * 8, f * c * 12)
    assemble = n * max(fm * cm * 4, f * c * 4) + one_take
    stages = 0.0
    if device.split(":")[0] == "cpu":
        batch = n if shape.mode != "zeta" else n + 1  # zeta inverts once more
        stages = m.take_mb * batch
        if shape.mode not in SAMPLING_ONLY:
            stages += m.train_mb
        if shape.mode == "full":
            stages += m.full_mb
    parts = {"source": src, "audio": max(prepare, windows, assemble), "stages": int(stages * MB),
             "fixed": int(m.fixed_mb * MB)}
    return Estimate(sum(parts.values()), parts)


def default_max_job_mb() -> float:
    """Half of this machine's physical memory (the loaded model, the system and other programs need the rest);
    8 GB where it cannot be read."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return 8000.0
    return float(max(1000, total // 2 // MB)) if total > 0 else 8000.0
