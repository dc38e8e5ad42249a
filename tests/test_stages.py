"""The three stages on the tiny model: what trains, what falls, what stays put, and the sampler's maths."""

from __future__ import annotations

import pytest
import torch
from known_predictors import ExactPredictor

from engine.models.base import Conditioning
from engine.stages import diffusion_loss, finetune, optimize_embedding, sample, tuned


@pytest.fixture(scope="module")
def z0(tiny_model):
    t = torch.arange(16000) / 16000
    wave = 0.4 * torch.sin(2 * torch.pi * 440 * t) * ((t % 0.25) < 0.08)
    return tiny_model.encode_audio(wave[None])


def fixed_loss(model, z0, cond, seed=123, reps=8):
    """The stage loss at fixed timesteps and noise, so before/after comparisons are not noise."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return sum(diffusion_loss(model, z0, cond, gen).item() for _ in range(reps)) / reps


def unet_state(model):
    return {k: v.clone() for k, v in model.unet.state_dict().items()}


def test_stage1_optimises_only_the_embedding_and_its_loss_falls(tiny_model, z0):
    e_target = tiny_model.encode_prompt(["a dog barking"])
    before_w = unet_state(tiny_model)
    e_opt, losses = optimize_embedding(tiny_model, z0, e_target, steps=60, lr=5e-2, seed=0)
    assert len(losses) == 60
    assert fixed_loss(tiny_model, z0, e_opt) < fixed_loss(tiny_model, z0, e_target)
    assert not torch.equal(e_opt.tensors["class_labels"], e_target.tensors["class_labels"])
    after_w = tiny_model.unet.state_dict()
    assert all(torch.equal(before_w[k], after_w[k]) for k in before_w)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_stage2_fits_and_leaves_the_pretrained_unet_bit_identical(tiny_model, z0, mode):
    e = tiny_model.encode_prompt(["a dog barking"])
    before = unet_state(tiny_model)
    lr = 1e-2 if mode == "lora" else 1e-3
    tuning, _ = finetune(tiny_model, z0, e, mode=mode, steps=40, lr=lr, rank=4, seed=0)
    after = tiny_model.unet.state_dict()
    assert set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)
    assert not any("lora" in n for n, _ in tiny_model.unet.named_modules())
    assert not any(p.requires_grad for p in tiny_model.unet.parameters())
    base_loss = fixed_loss(tiny_model, z0, e)
    with tuned(tiny_model, tuning):
        tuned_loss = fixed_loss(tiny_model, z0, e)
    assert tuned_loss < base_loss
    restored = tiny_model.unet.state_dict()
    assert all(torch.equal(before[k], restored[k]) for k in before)
    if mode == "lora":
        assert tuning.state and all("lora_" in k for k in tuning.state)
        n_adapter = sum(v.numel() for v in tuning.state.values())
        assert n_adapter < 0.2 * sum(v.numel() for v in before.values())
    else:
        assert set(tuning.state) == set(before)
        assert any(not torch.equal(tuning.state[k], before[k]) for k in before)


def test_interpolation_endpoints_are_exact(tiny_model):
    e_target = tiny_model.encode_prompt(["rain on a tin roof"])
    e_opt = Conditioning({"class_labels": torch.randn_like(e_target.tensors["class_labels"])})
    assert torch.equal(e_opt.lerp(e_target, 0.0).tensors["class_labels"], e_opt.tensors["class_labels"])
    assert torch.equal(e_opt.lerp(e_target, 1.0).tensors["class_labels"], e_target.tensors["class_labels"])
    mid = e_opt.lerp(e_target, 0.25).tensors["class_labels"]
    expect = 0.75 * e_opt.tensors["class_labels"] + 0.25 * e_target.tensors["class_labels"]
    assert torch.allclose(mid, expect)


def test_batched_etas_equal_sequential_etas_without_guidance(tiny_model, z0):
    e_target = tiny_model.encode_prompt(["a bell"])
    e_opt = Conditioning({"class_labels": e_target.tensors["class_labels"] * 0.3})
    conds = [e_opt.lerp(e_target, eta) for eta in (0.0, 0.5, 1.0)]
    kw = dict(latent_shape=tuple(z0.shape[1:]), steps=6, guidance=1.0, seed=5)
    batched = sample(tiny_model, conds, None, **kw)
    single = torch.cat([sample(tiny_model, [c], None, **kw) for c in conds])
    assert torch.allclose(batched, single, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(batched[0], batched[2])



@pytest.fixture
def exact_model(tiny_model, monkeypatch):
    z_ref = torch.randn(1, 8, 12, 16, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(tiny_model, "predict_noise", ExactPredictor(tiny_model, z_ref))
    return tiny_model, z_ref


def rel_err(a, b):
    return ((a - b) ** 2).mean().item() / (b**2).mean().item()


@pytest.mark.parametrize("sampler", ["ddim", "dpm"])
def test_sampler_reconstructs_the_known_latent(exact_model, sampler):
    model, z_ref = exact_model
    c = Conditioning({"class_labels": torch.zeros(1, 32)})
    out = sample(model, [c, c], c, latent_shape=(8, 12, 16), steps=30, guidance=3.0, seed=0, sampler=sampler)
    assert rel_err(out[0:1], z_ref) < 5e-3 and rel_err(out[1:2], z_ref) < 5e-3
    sd = sample(model, [c], None, latent_shape=(8, 12, 16), steps=30, guidance=1.0, seed=0, sampler=sampler,
                z_ref=z_ref, strength=0.4)
    assert rel_err(sd, z_ref) < 5e-3


def test_inpainting_keeps_the_latent_outside_the_mask_exactly(tiny_model, z0):
    c = tiny_model.encode_prompt(["thunder"])
    keep = torch.ones(1, 1, z0.shape[2], 1)
    keep[:, :, 10:20] = 0
    out = sample(tiny_model, [c], None, latent_shape=tuple(z0.shape[1:]), steps=5, guidance=1.0, seed=0,
                 z_ref=z0, keep=keep)
    assert torch.equal(out[:, :, :10], z0[:, :, :10]) and torch.equal(out[:, :, 20:], z0[:, :, 20:])
    assert not torch.allclose(out[:, :, 10:20], z0[:, :, 10:20])
