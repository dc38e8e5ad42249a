"""Noise predictors whose answer is known, to test sampler and inversion maths without a trained model."""

from __future__ import annotations


class ExactPredictor:
    """ε(x_t, t) = (x_t − √ᾱ_t·z_ref)/√(1−ᾱ_t): the noise predictor of a model that knows one latent exactly."""

    def __init__(self, model, z_ref):
        self.ac, self.z_ref = model.scheduler.alphas_cumprod, z_ref

    def __call__(self, z_t, t, cond):
        a = self.ac[t.long()].view(-1, 1, 1, 1)
        return (z_t - a.sqrt() * self.z_ref) / (1 - a).sqrt()
