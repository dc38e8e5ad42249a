"""Regression tests for the flow-model engine review (/work/notes/review-engine.md, findings 1-4, 6-8), on the
tiny Stable Audio 3 model on the CPU. Each failed before its fix."""

from __future__ import annotations

import json

import pytest
import torch

from engine import precision
from engine.models.stable_audio3 import tiny_stable_audio3
from engine.stages import finetune, sample, tuned

FRAMES = 8
SHAPE = (8, FRAMES)  # the tiny DiT's io channels × latent frames


@pytest.fixture(scope="module")
def sa3():
    return tiny_stable_audio3(seed=0)


def _z0(m, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return m.audio_to_latent(0.3 * torch.randn(1, 2, FRAMES * m.downsampling, generator=g))


# 1 + 2 -----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sa3_bf16():
    return precision.apply(tiny_stable_audio3(seed=0), "bf16")


def test_bf16_inpainting_runs_and_stays_close_to_fp32(sa3, sa3_bf16):
    """The inpainting input (local_add_cond) is cast at the DiT's boundary like the text context."""
    z0 = _z0(sa3)
    keep = torch.ones(1, 1, FRAMES)
    keep[..., 2:5] = 0
    kw = dict(latent_shape=SHAPE, steps=3, guidance=1.0, seed=2, z_ref=z0, keep=keep)
    low = sample(sa3_bf16, [sa3_bf16.encode_prompt(["rain"])], None, **kw)
    ref = sample(sa3, [sa3.encode_prompt(["rain"])], None, **kw)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert (low - ref).abs().max() < 0.2 * ref.abs().max()  # bf16 rounding, not another result


def test_bf16_full_finetune_trains_and_samples(sa3_bf16):
    """Full mode trains the DiT in fp32 while the duration embedder stays bf16: its output (the global input) is
    cast to the DiT's current weight dtype, in training and in sampling with the tuning."""
    m = sa3_bf16
    z0 = _z0(m)
    e = m.encode_prompt(["rain"])
    tuning, losses = finetune(m, z0, e, mode="full", steps=2, lr=1e-4, rank=4, seed=0)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    with tuned(m, tuning):
        out = sample(m, [e], None, latent_shape=SHAPE, steps=2, guidance=1.0, seed=1)
    assert torch.isfinite(out).all()
    assert precision.weight_dtype(m.unet) == torch.bfloat16  # stored in bf16 again afterwards
