"""Starting the sampler from the input itself, so an edit keeps the input's timing.

Two inversions of a latent z0 on the sampler's own timestep grid τ_1 > … > τ_S (then the final level):

- ``ddim_invert``: deterministic DDIM inversion, the sampler's ODE run backwards. Used by the three-stage edit:
  stage 3 starts every η from the noise that the tuned UNet under e_opt maps back onto z0, instead of from fresh
  noise, so where the events sit is already decided by the input.
- ``extract_noise_maps`` / ``zeta_sample``: edit-friendly DDPM inversion (Huberman-Spiegelglas et al., used by
  ZETA for zero-shot audio editing). Each level x_τ is drawn *independently* as √ᾱ·z0 + √(1−ᾱ)·n; the noise a
  stochastic (DDIM η = 1) step would need to land exactly on the next level is then solved for. Re-running those
  steps with the same residuals but another prompt gives an edit; with the source prompt it gives z0 back exactly,
  whatever the model. No training, so it is the fast mode that really edits.

Both handle ε- and v-predicting models; guidance is explicit (see each function).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.models.base import AudioModel, Conditioning
from engine.stages import StepFn, _noop, guidance_batch, guided_prediction, make_sampler


def _grid(model: AudioModel, steps: int,
          sampler: str = "ddim") -> tuple[torch.Tensor, list[float], list[float], torch.Tensor]:
    """The sampler's own timesteps (descending, on the host) with ᾱ at each, ᾱ at the level each step lands on
    (the next timestep; after the last one DDIM's final ᾱ, or a clean latent for DPM-Solver++, which ends at
    σ = 0) and that level's timestep (0 at the end), so an inverted start is the level ``stages.sample`` starts
    from with the same sampler. (For DDIM's "leading" grid the next timestep is DDIM's own t − T/steps.)"""
    schedule = model.schedule
    if schedule.kind != "ddpm":  # an ᾱ method: read the schedule's own table, never a family's scheduler attribute
        raise ValueError(f"DDIM inversion needs an ᾱ-schedule model, not a {schedule.kind} one")
    sched = make_sampler(model, sampler, steps)
    ts = sched.timesteps.cpu()
    ac = schedule.alphas_cumprod.cpu().double()
    final = float(sched.final_alpha_cumprod) if hasattr(sched, "final_alpha_cumprod") else 1.0
    a_t = [float(ac[t]) for t in ts]
    a_prev = [float(ac[t]) for t in ts[1:]] + [final]
    t_prev = torch.cat([ts[1:], torch.zeros(1, dtype=ts.dtype)])
    return ts, a_t, a_prev, t_prev


def _eps_x0(model: AudioModel, out: torch.Tensor, x: torch.Tensor, a: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(ε, x0) from the model output at a level with ᾱ = a."""
    sa, sb = a**0.5, (1 - a) ** 0.5
    if model.schedule.prediction_type == "v_prediction":
        return sa * out + sb * x, sa * x - sb * out
    return out, (x - sb * out) / sa


@torch.no_grad()
def ddim_invert(model: AudioModel, z0: torch.Tensor, cond: Conditioning, *, steps: int, sampler: str = "ddim",
                on_step: StepFn = _noop) -> torch.Tensor:
    """The start noise x_τ1 from which sampling with ``steps`` steps under ``cond`` returns (about) z0, on the
    grid of ``sampler`` (its first timestep is where that sampler starts).

    Unguided on purpose: it uses the conditional branch alone. Stage 2 fits the UNet to z0 under e_opt without
    guidance, so that branch is the model that knows z0; inverting a guided prediction (w > 1) drifts off the
    data at every step (the error Null-text inversion exists to fix), and would bake one guidance scale into
    a start that all η share. Each step uses ε(x_s, s) at the current level for the move up to the next one,
    DDIM's usual first-order approximation (exact when the predictor's x0 does not depend on x).
    """
    ts, a_t, a_prev, t_prev = _grid(model, steps, sampler)
    t_dev = t_prev.to(model.device)  # one copy, not one (and a sync) per step
    x = z0.clone()
    for k, i in enumerate(reversed(range(len(ts)))):
        # from the level sampling step i lands on (the next timestep, or 0 after the last step) up to ts[i]'s
        out = guided_prediction(model, x, t_dev[i], cond, None, 1.0)
        eps, x0 = _eps_x0(model, out, x, a_prev[i])
        x = a_t[i] ** 0.5 * x0 + (1 - a_t[i]) ** 0.5 * eps
        on_step(k + 1, len(ts), None)
    return x


@dataclass
class NoiseMaps:
    """An input's edit-friendly inversion: the level at every timestep and the per-step residual noise.

    ``levels[i]`` is x at timestep ``timesteps[i]`` (``levels[S]`` is z0); ``residuals[i]`` = σ_i·z_i, the
    scaled noise map that takes a stochastic step from ``levels[i]`` exactly to ``levels[i + 1]`` under the
    source prompt (kept pre-scaled so a zero-variance last step stays exact).
    """

    timesteps: torch.Tensor
    levels: torch.Tensor  # (S + 1, *latent)
    residuals: torch.Tensor  # (S, *latent)
    steps: int

    def start_index(self, strength: float) -> int:
        """The step a strength in (0, 1] starts from: 1 re-samples all S steps, → 0 only the last one."""
        s = len(self.timesteps)
        return min(s - 1, s - max(1, round(strength * s)))


def _ddpm_mean(model: AudioModel, out: torch.Tensor, x: torch.Tensor, a: float,
               a_prev: float) -> tuple[torch.Tensor, float]:
    """A DDIM η = 1 (i.e. DDPM-variance) step without its noise: (mean, σ)."""
    eps, x0 = _eps_x0(model, out, x, a)
    var = max(0.0, (1 - a_prev) / (1 - a) * (1 - a / a_prev))
    mean = a_prev**0.5 * x0 + max(0.0, 1 - a_prev - var) ** 0.5 * eps
    return mean, var**0.5


@torch.no_grad()
def extract_noise_maps(model: AudioModel, z0: torch.Tensor, cond: Conditioning, uncond: Conditioning | None, *,
                       steps: int, guidance: float, seed: int, on_step: StepFn = _noop) -> NoiseMaps:
    """Edit-friendly DDPM inversion of z0 (1, *latent) under the source conditioning ``cond``.

    Guidance is applied as in sampling (ZETA guides the source too); with an empty source prompt ``cond`` equals
    ``uncond`` and guidance has no effect. Reconstruction is exact for any model, since each residual is solved
    against that model's own prediction.
    """
    ts, a_t, a_prev, _ = _grid(model, steps)
    ts_dev = ts.to(model.device)
    both = guidance_batch(cond, uncond) if uncond is not None and guidance > 1.0 else None
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(ts), *z0.shape[1:]), generator=gen, dtype=torch.float32).to(z0.device, z0.dtype)
    a = torch.tensor(a_t, dtype=z0.dtype, device=z0.device).view(-1, *([1] * (z0.dim() - 1)))
    levels = torch.cat([a.sqrt() * z0 + (1 - a).sqrt() * noise, z0])
    residuals = torch.empty_like(noise)
    for i in range(len(ts)):
        x = levels[i:i + 1]
        out = guided_prediction(model, x, ts_dev[i], cond, uncond, guidance, both=both)
        mean, _ = _ddpm_mean(model, out, x, a_t[i], a_prev[i])
        residuals[i] = levels[i + 1] - mean[0]
        on_step(i + 1, len(ts), None)
    return NoiseMaps(ts, levels, residuals, steps)


@torch.no_grad()
def zeta_sample(model: AudioModel, maps: NoiseMaps, cond: Conditioning, uncond: Conditioning | None, *,
                strengths: list[float], guidance: float, keep: torch.Tensor | None = None,
                on_step: StepFn = _noop) -> torch.Tensor:
    """Re-sample the inverted input under ``cond`` from each strength's start step; (len(strengths), *latent).

    All strengths run in one loop: a take joins the batch at its own start step (from the inverted level there)
    and every step adds back the input's residual noise, so the takes differ only in how many steps the target
    prompt steers. ``keep`` (1 = keep) puts the input's own level back outside an inpainting range each step.
    """
    _, a_t, a_prev, _ = _grid(model, maps.steps)
    ts_dev = maps.timesteps.to(model.device)
    starts = [maps.start_index(float(s)) for s in strengths]
    order = sorted(range(len(starts)), key=lambda j: starts[j])  # earliest start first: the active takes of a
    starts_sorted = [starts[j] for j in order]                     # step are then a prefix of the batch
    first = starts_sorted[0]
    x = maps.levels[starts_sorted].clone()  # a take that joins later starts from the input's level there
    total = len(maps.timesteps) - first
    conds = {m: cond.repeat(m) for m in sorted(set(range(1, len(starts) + 1)))}
    boths = {m: guidance_batch(c, uncond) if uncond is not None and guidance > 1.0 else None
             for m, c in conds.items()}
    for i in range(first, len(maps.timesteps)):
        m = sum(s <= i for s in starts_sorted)
        xa = x[:m]
        out = guided_prediction(model, xa, ts_dev[i], conds[m], uncond, guidance, both=boths[m])
        mean, _ = _ddpm_mean(model, out, xa, a_t[i], a_prev[i])
        x[:m] = mean + maps.residuals[i:i + 1]
        if keep is not None:
            x = keep * maps.levels[i + 1:i + 2] + (1 - keep) * x
        on_step(i - first + 1, total, None)
    inverse = sorted(range(len(order)), key=lambda j: order[j])
    return x[inverse]
