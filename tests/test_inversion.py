"""Inversion maths (engine.inversion) with noise predictors whose answer is known, then on the tiny model."""

from __future__ import annotations

import pytest
import torch
from known_predictors import ExactPredictor

from engine.inversion import ddim_invert, extract_noise_maps, zeta_sample
from engine.models.base import Conditioning
from engine.stages import sample

SHAPE = (8, 12, 16)



class GaussianPredictor:
    """The optimal ε for data ~ N(μ, s²) per element: x0's posterior mean depends on x_t, so where sampling
    starts decides where it ends (unlike the exact predictor, which reaches z_ref from any start)."""

    def __init__(self, model, mu, s):
        self.ac, self.mu, self.s2 = model.scheduler.alphas_cumprod, mu, s * s

    def __call__(self, z_t, t, cond):
        a = self.ac[t.long()].view(-1, 1, 1, 1)
        x0 = self.mu + a.sqrt() * self.s2 * (z_t - a.sqrt() * self.mu) / (a * self.s2 + 1 - a)
        return (z_t - a.sqrt() * x0) / (1 - a).sqrt()


def rel_err(a, b):
    return ((a - b) ** 2).mean().item() / (b**2).mean().item()


def cond_zero():
    return Conditioning({"class_labels": torch.zeros(1, 32)})


@pytest.fixture
def exact_model(tiny_model, monkeypatch):
    z_ref = torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(tiny_model, "predict_noise", ExactPredictor(tiny_model, z_ref))
    return tiny_model, z_ref


@pytest.fixture
def gaussian_model(tiny_model, monkeypatch):
    g = torch.Generator().manual_seed(2)
    mu = torch.randn(1, *SHAPE, generator=g)
    z0 = mu + 0.5 * torch.randn(1, *SHAPE, generator=g)
    monkeypatch.setattr(tiny_model, "predict_noise", GaussianPredictor(tiny_model, mu, 0.5))
    return tiny_model, z0


def test_ddim_inversion_then_sampling_reconstructs_the_known_latent(exact_model):
    model, z_ref = exact_model
    c = cond_zero()
    x_T = ddim_invert(model, z_ref, c, steps=30)
    assert x_T.shape == z_ref.shape
    out = sample(model, [c, c], c, latent_shape=SHAPE, steps=30, guidance=3.0, seed=0, x_T=x_T)
    assert rel_err(out[0:1], z_ref) < 5e-3 and rel_err(out[1:2], z_ref) < 5e-3


def test_inverted_start_returns_the_input_where_fresh_noise_does_not(gaussian_model):
    model, z0 = gaussian_model
    c = cond_zero()
    x_T = ddim_invert(model, z0, c, steps=50)
    back = sample(model, [c], None, latent_shape=SHAPE, steps=50, guidance=1.0, seed=0, x_T=x_T)
    fresh = sample(model, [c], None, latent_shape=SHAPE, steps=50, guidance=1.0, seed=0)
    assert rel_err(back, z0) < 1e-2
    assert rel_err(fresh, z0) > 5e-2
    assert 0.5 < x_T.std().item() < 1.5  # a noise-level start, not the latent


@pytest.mark.parametrize("strength", [0.01, 0.5, 1.0])
def test_zeta_reconstructs_the_known_latent_at_any_strength(exact_model, strength):
    model, z_ref = exact_model
    c = cond_zero()
    maps = extract_noise_maps(model, z_ref, c, None, steps=20, guidance=1.0, seed=3)
    assert maps.residuals.shape == (20, *SHAPE) and torch.equal(maps.levels[-1], z_ref[0])
    out = zeta_sample(model, maps, c, None, strengths=[strength], guidance=1.0)
    assert torch.allclose(out, z_ref, atol=1e-4)


def test_zeta_start_step_follows_strength(tiny_model):
    z0 = torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(4))
    maps = extract_noise_maps(tiny_model, z0, cond_zero(), None, steps=20, guidance=1.0, seed=0)
    assert [maps.start_index(s) for s in (1.0, 0.5, 0.01)] == [0, 10, 19]


def test_zeta_on_a_real_unet_is_exact_under_the_source_prompt_and_edits_under_another(tiny_model):
    """Edit-friendly inversion reconstructs for any model (here a random UNet); another prompt changes the
    result more the higher the strength; batched strengths equal single runs."""
    z0 = torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(5))
    src, tgt = tiny_model.encode_prompt(["", "a dog barking"]).split([1, 1])
    maps = extract_noise_maps(tiny_model, z0, src, src, steps=10, guidance=2.0, seed=0)
    same = zeta_sample(tiny_model, maps, src, src, strengths=[1.0, 0.3], guidance=2.0)
    assert torch.allclose(same, z0.expand_as(same), atol=1e-4)
    edit = zeta_sample(tiny_model, maps, tgt, src, strengths=[0.05, 1.0], guidance=2.0)
    d_low, d_high = ((edit - z0) ** 2).mean(dim=(1, 2, 3)).tolist()
    assert 0 < d_low < d_high
    alone = zeta_sample(tiny_model, maps, tgt, src, strengths=[1.0], guidance=2.0)
    assert torch.allclose(alone[0], edit[1], atol=1e-5)


def test_zeta_keeps_the_latent_outside_an_inpainting_mask(tiny_model):
    z0 = torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(6))
    src, tgt = tiny_model.encode_prompt(["", "thunder"]).split([1, 1])
    keep = torch.ones(1, 1, SHAPE[1], 1)
    keep[:, :, 4:8] = 0
    maps = extract_noise_maps(tiny_model, z0, src, src, steps=8, guidance=1.0, seed=0)
    out = zeta_sample(tiny_model, maps, tgt, src, strengths=[1.0], guidance=1.0, keep=keep)
    assert torch.equal(out[:, :, :4], z0[:, :, :4]) and torch.equal(out[:, :, 8:], z0[:, :, 8:])
    assert not torch.allclose(out[:, :, 4:8], z0[:, :, 4:8])


def test_an_inverted_start_is_shared_by_every_take_alone_or_batched(tiny_model):
    z0 = torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(7))
    a, b = tiny_model.encode_prompt(["rain", "a dog barking"]).split([1, 1])
    x_T = ddim_invert(tiny_model, z0, a, steps=6)
    both = sample(tiny_model, [a, b], None, latent_shape=SHAPE, steps=6, guidance=1.0, seed=0, x_T=x_T)
    alone = sample(tiny_model, [b], None, latent_shape=SHAPE, steps=6, guidance=1.0, seed=9, x_T=x_T)
    assert torch.allclose(both[1:], alone, atol=1e-4)  # the seed no longer matters: the start is the input's
    fresh = sample(tiny_model, [b], None, latent_shape=SHAPE, steps=6, guidance=1.0, seed=0)
    assert not torch.allclose(fresh, alone, atol=1e-2)
