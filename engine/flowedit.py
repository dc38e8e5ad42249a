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
the target prompt moves the rest. The strength is the start noise level σ_start (the paper's n_max as a level),
read exactly as SDEdit's ``init_noise_level``: 1 runs the whole schedule, 0.5 starts where the sampler's grid
reaches σ ≤ 0.5. The grid is the sampler's own (``FlowSchedule.grid``: shift and the other scheduler options
honoured). Strengths that start on the same step are one take computed once; the others run in one loop, a take
joining at its own start step, and every step is one network call (the source branch per draw, then each active
take per draw; guidance adds the unconditional rows).

Guidance (the paper guides the branches differently: SD3 3.5 source / 13.5 target, FLUX 1.5 / 5.5, §5): the
target rows use ``guidance``; the source rows use ``source_guidance`` when a source prompt is given, and run the
unconditional branch alone without one (its CFG would be v_u + g·(v_u − v_u) = v_u: wasted rows).

Inpainting: the known part of the latent is put back after each step (the decoded audio is spliced anyway).

Cost by device (:func:`default_steps`, :func:`default_draws`): on a CUDA GPU a call is launch-bound, so rows are
nearly free and the paper's settings stay (28 steps, 2 draws batched). Without CUDA (a CPU, Apple's MPS) a call costs
about its rows, so the preview takes 1 draw and a grid just fine enough that the strongest take gets
:data:`CPU_CALLS` steps: one strength then costs 2 × 6 = 12 rows against SDEdit's 8 (1.5×), and every strength and
branch shares each call. The quality cost of both choices is measured on toy-flow (docs/performance.md, "A preview
a CPU can afford").
"""

from __future__ import annotations

import torch

from engine.models.base import AudioModel, Conditioning
from engine.stages import StepFn, _noop, guided_prediction

__all__ = ["CPU_CALLS", "CPU_DRAWS", "DEFAULT_STEPS", "NOISE_DRAWS", "default_draws", "default_steps",
           "flowedit"]

NOISE_DRAWS = 2  # the paper's n_avg: noise draws averaged per step (1 already works; 2 steadies short schedules)
# FlowEdit's own step count when none is given (not the model's sampling default: 8 for the distilled SA3
# checkpoints). The paper runs T = 28 (FLUX) to 50 (SD3) Euler steps; 8 steps leave very coarse Euler steps on V_Δ,
# whose error adds up along the path instead of being corrected by the sampler's re-noising. 28 = the FLUX setting,
# the cheaper end of the paper's range. (FLUX-dev is guidance-distilled, not step-distilled; SA3's distilled
# checkpoints are step-distilled by ARC post-training and sample unguided in 8 steps: that shortcut is their own
# sampler's, FlowEdit's Euler ODE on V_Δ does not inherit it.)
DEFAULT_STEPS = 28
# Without CUDA: the strongest take's sequential steps, and the draws per step (docs/performance.md measures both).
CPU_CALLS = 6
CPU_DRAWS = 1


def default_steps(schedule, strengths: list[float] | tuple[float, ...], device: torch.device | str) -> int:
    """The grid's step count T when the caller gave none: on CUDA the paper's :data:`DEFAULT_STEPS`; elsewhere the
    coarsest grid (of the sampler's own law) on which the strongest take, starting at σ = the highest strength,
    still runs :data:`CPU_CALLS` steps (at most DEFAULT_STEPS)."""
    if torch.device(device).type == "cuda":
        return DEFAULT_STEPS
    top = max((min(1.0, float(s)) for s in strengths if isinstance(s, (int, float)) and s > 0), default=1.0)
    steps = CPU_CALLS
    while steps < DEFAULT_STEPS and steps - schedule.start_step(top, schedule.grid(steps)) < CPU_CALLS:
        steps += 1
    return steps


def default_draws(device: torch.device | str) -> int:
    """Noise draws a step: the paper's 2 on CUDA (one batched call either way), 1 elsewhere (rows cost time)."""
    return NOISE_DRAWS if torch.device(device).type == "cuda" else CPU_DRAWS


@torch.no_grad()
def flowedit(model: AudioModel, z0: torch.Tensor, src: Conditioning | None, tar: Conditioning,
             uncond: Conditioning | None, *, strengths: list[float], steps: int, guidance: float, seed: int,
             draws: int = NOISE_DRAWS, source_guidance: float | None = None, keep: torch.Tensor | None = None,
             on_step: StepFn = _noop) -> torch.Tensor:
    """Edit z0 (1, *latent) from ``src`` (None: no source prompt) towards ``tar`` at each strength (start σ);
    returns (len(strengths), *latent)."""
    schedule = model.schedule
    if schedule.kind != "flow":
        raise ValueError("FlowEdit needs a flow (velocity-predicting) model")
    sigmas = schedule.grid(steps)  # host floats, the final 0 included
    take_start = [schedule.start_step(float(s), sigmas) for s in strengths]
    starts = sorted(set(take_start))  # one row per distinct start, earliest first: the active rows are a prefix
    first, rows = starts[0], len(starts)
    dev, shape = z0.device, tuple(z0.shape[1:])
    cfg = uncond is not None and guidance > 1.0
    src_cfg = cfg and src is not None and source_guidance is not None and source_guidance > 1.0
    src_rows = src if src is not None else uncond if uncond is not None else tar  # tar only if nothing else exists
    # Before the loop, so the loop makes no host→device copy: the noise of every step (one (draws, *latent) draw
    # per step of the whole grid, in step order: a step's noise does not depend on where the earliest take starts,
    # so a take equals its solo run) and the network's time inputs.
    gen = torch.Generator().manual_seed(seed)
    noise_all = torch.stack([torch.randn((draws, *shape), generator=gen, dtype=torch.float32)
                             for _ in range(steps)][first:]).to(dev, z0.dtype)
    t_all = torch.tensor([schedule.timestep(s) for s in sigmas[first:steps]], dtype=torch.float32).to(dev)
    batches: dict[int, Conditioning] = {}  # the conditioning of a step's batch, per number of active rows

    def batch_cond(m: int) -> Conditioning:
        if m not in batches:
            parts = [src_rows.repeat(draws)]
            if src_cfg:
                parts.append(uncond.repeat(draws))
            parts.append(tar.repeat(draws * m))
            if cfg:
                parts.append(uncond.repeat(draws * m))
            batches[m] = Conditioning.cat(parts)
        return batches[m]

    z = z0.expand(rows, *shape).clone()
    total = steps - first
    for k, i in enumerate(range(first, steps)):
        m = sum(1 for s in starts if s <= i)
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        noise = noise_all[k]
        z_src = (1.0 - sigma) * z0 + sigma * noise  # (draws, *latent)
        z_tar = (z[:m].unsqueeze(0) + (z_src - z0).unsqueeze(1)).reshape(-1, *shape)  # (draws·m, *latent)
        x = torch.cat([z_src, z_src, z_tar] if src_cfg else [z_src, z_tar])
        if cfg:
            x = torch.cat([x, z_tar])
        v = guided_prediction(model, x, t_all[k], batch_cond(m), None, 1.0)  # one network call, CFG mixed here
        v_src, v = v[:draws], v[draws:]
        if src_cfg:
            v_src_u, v = v[:draws], v[draws:]
            v_src = v_src_u + source_guidance * (v_src - v_src_u)
        v_tar = v[:draws * m]
        if cfg:
            v_tar_u = v[draws * m:]
            v_tar = v_tar_u + guidance * (v_tar - v_tar_u)
        delta = (v_tar.reshape(draws, m, *shape) - v_src.unsqueeze(1)).mean(0)
        z[:m] = z[:m] + (sigma_next - sigma) * delta.to(z.dtype)
        if keep is not None:
            z = keep * z0 + (1 - keep) * z
        on_step(k + 1, total, None)
    return z[[starts.index(s) for s in take_start]]
