"""The shipped toy model (trained on the procedural world by ``python -m toyworld.train``) loads offline and edits.

Only two claims are tested, both cheap: the model and its CLAP load through the ordinary registry path, and the
real Editor with η = 0 gives back a training clip more faithfully than η = 1 does. Quality numbers live in
``benchmarks/quality.py`` / docs/quality.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch

from engine.models.registry import SHIPPED, resolve

pytestmark = pytest.mark.skipif(not (SHIPPED["toy"][1] / "model_index.json").exists(),
                                reason="toy weights not trained (python -m toyworld.train)")

UNET_TRAIN_START = 600_000  # the clips the UNet stage trained on (toyworld.train.train_unet)


@pytest.fixture(scope="module")
def toy_editor():
    from engine.editor import load_editor

    torch.set_num_threads(1)
    return load_editor("toy", device="cpu")


def test_toy_resolves_to_shipped_folder_and_loads_offline(toy_editor):
    spec = resolve("toy")
    assert spec.family == "audioldm" and spec.name == "toy"
    assert (SHIPPED["toy"][1] / "unet" / "config.json").exists()
    m = toy_editor.model
    assert m.name == "toy" and m.max_seconds == pytest.approx(2.56)
    assert type(m.unet).__name__ == "UNet2DConditionModel" and m.unet.config.class_embed_type == "simple_projection"
    assert type(m.vocoder).__name__ == "SpeechT5HifiGan"
    assert type(m.text_encoder).__name__ == "ClapTextModelWithProjection"
    assert toy_editor.scorer is not None  # the toy CLAP, not the (absent) LAION one
    # Its own stage settings apply where the user sets none (the paper's rates suit models 100-1000x larger).
    from engine.params import EditParams

    p = toy_editor.resolve_params(EditParams(prompt="three knocks", mode="full"))
    assert (p.embed_steps, p.embed_lr, p.tune_steps, p.tune_lr, p.sample_steps) == (40, 2.5e-2, 300, 5e-5, 30)
    lora = toy_editor.resolve_params(EditParams(prompt="three knocks"))
    assert (lora.tune_steps, lora.tune_draws, lora.tune_lr) == (75, 4, 6e-3)  # issue 17: a third of the calls
    # The toy CLAP's text tower is the diffusion model's text encoder.
    emb = m.encode_prompt(["three knocks"]).tensors["class_labels"]
    assert torch.allclose(emb, toy_editor.scorer.embed_text(["three knocks"]), atol=1e-5)


def test_eta0_reconstructs_a_training_clip_better_than_eta1(toy_editor, tmp_path):
    from engine.params import EditParams, EditRequest
    from toyworld import world
    from toyworld.distance import logmel_l1

    clip = world.clip(UNET_TRAIN_START + 3)
    path = tmp_path / "in.wav"
    sf.write(str(path), clip.wave, world.SR, subtype="FLOAT")
    # The toy model's stage settings (docs/quality.md), shortened: stage 1 100 @ 1e-2, stage 2 full 150 @ 2e-5.
    params = EditParams(prompt="four high beeps over soft hiss", etas=(0.0, 1.0), mode="full", embed_steps=100,
                        embed_lr=1e-2, tune_steps=150, tune_lr=2e-5, sample_steps=20, seed=0)
    result = toy_editor.edit(EditRequest(str(path), params=params))
    d0, d1 = (logmel_l1(t.audio[:, 0], clip.wave) for t in result.takes)
    assert d0 < d1, (clip.caption, d0, d1)


def test_toy_training_uses_the_schedule_the_shipped_toy_was_trained_on():
    # the tiny models moved to AudioLDM's schedule; retraining the toy must keep the one it shipped with
    import json

    from toyworld.train import TOY_SCHEDULER_CONFIG

    shipped = json.loads((Path(__file__).resolve().parent.parent / "engine" / "weights" / "toy" / "scheduler"
                          / "scheduler_config.json").read_text())
    assert {k: shipped[k] for k in TOY_SCHEDULER_CONFIG} == TOY_SCHEDULER_CONFIG
