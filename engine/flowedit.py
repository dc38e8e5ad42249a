"""FlowEdit: an inversion-free, optimisation-free text edit on a flow model (Kulikov et al., "FlowEdit:
Inversion-Free Text-Based Editing Using Pre-Trained Flow Models", arXiv 2412.08629, Algorithm 1).

The edit is an ODE that starts at the input itself, Z = X_src, and integrates the *difference* of two velocities
along the model's sigma schedule:

    for σ_i from σ_start down to 0:
        N ~ 𝒩(0, I)                                  (a few draws, averaged)
        Z_src = (1 − σ_i)·X_src + σ_i·N             the input noised to σ_i
        Z_tar = Z + Z_src − X_src                    the edit so far, carrying the same noise
        V_Δ   = mean over draws of v(Z_tar, σ_i, c_tar) − v(Z_src, σ_i, c_src)
        Z    += (σ_{i+1} − σ_i)·V_Δ

Nothing is inverted: the noise cancels in expectation, so what the source prompt explains of the input stays and
the target prompt moves the rest. The strength in (0, 1] sets where it starts (the paper's n_max): 1 runs the
whole schedule, small values only its last, fine-detail steps. All strengths of one request run in one loop — a
take joins at its own start step — and every call is batched: the source branch once per draw, then each active
take per draw, all in one network call (guidance doubles it, as in sampling).

Inpainting: the known part of the latent is put back after each step (the decoded audio is spliced anyway).
"""

from __future__ import annotations

import torch

from engine.models.base import AudioModel, Conditioning
from engine.schedules import start_index
from engine.stages import StepFn, _noop, guided_prediction

__all__ = ["NOISE_DRAWS", "flowedit", "start_index"]

NOISE_DRAWS = 2  # the paper's n_avg: noise draws averaged per step (1 already works; 2 steadies short schedules)


@torch.no_grad()
def flowedit(model: AudioModel, z0: torch.Tensor, src: Conditioning, tar: Conditioning,
             uncond: Conditioning | None, *, strengths: list[float], steps: int, guidance: float, seed: int,
             draws: int = NOISE_DRAWS, keep: torch.Tensor | None = None, on_step: StepFn = _noop) -> torch.Tensor:
    """Edit z0 (1, *latent) from ``src`` towards ``tar`` at each strength; returns (len(strengths), *latent)."""
    schedule = model.schedule
    if schedule.kind != "flow":
        raise ValueError("FlowEdit needs a flow (velocity-predicting) model")
    sigmas = [*schedule.sigmas(steps), 0.0]
    starts = [start_index(float(s), steps) for s in strengths]
    first = min(starts)
    gen = torch.Generator().manual_seed(seed)
    shape = tuple(z0.shape[1:])
    z = z0.expand(len(strengths), *shape).clone()
    total = steps - first
    for i in range(first, steps):
        active = [j for j, s in enumerate(starts) if s <= i]
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        noise = torch.randn((draws, *shape), generator=gen, dtype=torch.float32).to(z0.device, z0.dtype)
        z_src = (1.0 - sigma) * z0 + sigma * noise  # (draws, *latent)
        z_tar = z[active].unsqueeze(0) + (z_src - z0).unsqueeze(1)  # (draws, takes, *latent)
        x = torch.cat([z_src, z_tar.reshape(-1, *shape)])
        cond = Conditioning.cat([src.repeat(draws), tar.repeat(draws * len(active))])
        t = torch.as_tensor(schedule.timestep(sigma), dtype=torch.float32, device=z0.device)
        v = guided_prediction(model, x, t, cond, uncond, guidance)
        v_src, v_tar = v[:draws], v[draws:].reshape(draws, len(active), *shape)
        delta = (v_tar - v_src.unsqueeze(1)).mean(0)
        idx = torch.tensor(active, device=z.device)
        z[idx] = z[idx] + (sigma_next - sigma) * delta.to(z.dtype)
        if keep is not None:
            z = keep * z0 + (1 - keep) * z
        on_step(i - first + 1, total, None)
    return z
