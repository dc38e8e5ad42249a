"""What a model's noise process means to the stages: the training pair, the sampler, and the noising of a known
latent, behind one small interface so the three stages never ask which kind of model they run on.

- :class:`DDPMSchedule` wraps the diffusers scheduler of the AudioLDM family (an ᾱ schedule; the network predicts
  ε or v). Its behaviour is exactly what the stages did before this module existed.
- :class:`FlowSchedule` is rectified flow as Stable Audio 3 uses it (x_σ = (1 − σ)·x0 + σ·ε, the network predicts
  the velocity v = ε − x0, so x0 = x_σ − σ·v; diffusers' ``FlowMatchEulerDiscreteScheduler``), sampled on the SA3
  pipeline's log-SNR sigma schedule (``logsnr_sigma_schedule``), with the distilled checkpoints' ping-pong
  re-noising or plain Euler steps.
- :class:`ShiftedFlowSchedule` is the same rectified flow on ACE-Step's grid: a linear σ grid bent by the
  time shift σ' = s·σ / (1 + (s − 1)·σ) (``AceStepPipeline._get_timestep_schedule``), Euler steps.

A sampler is the diffusers scheduler object (stateful, one per sampling run); the schedule owns every operation the
stages apply to it, so a family brings its own without the stages changing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch


def start_index(strength: float, steps: int) -> int:
    """The sampling step a strength in (0, 1] starts from (1 = all steps, → 0: only the last); SDEdit on the ᾱ
    family and FlowEdit's n_max."""
    return min(steps - 1, steps - max(1, round(strength * steps)))


class Schedule(ABC):
    """The prediction / loss / sampling rules of one model."""

    kind: str  # "ddpm" | "flow"
    config: Any  # the wrapped diffusers scheduler's config

    @abstractmethod
    def joint_strengths(self, sampler: str) -> bool:
        """Whether takes with different SDEdit strengths can share one sampling loop with this sampler."""

    @property
    @abstractmethod
    def max_steps(self) -> int:
        """The most sampling steps that make sense (the training grid for DDPM)."""

    @abstractmethod
    def draw(self, z0: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(network timestep, noise) per row of z0, drawn from ``gen`` (where it lives), moved to z0's device."""

    @abstractmethod
    def training_pair(self, z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
        """(noisy input, regression target) for clean latents at the drawn timesteps."""

    @abstractmethod
    def sampler(self, kind: str, steps: int):
        """A fresh stateful sampler for ``steps`` steps, its tables and timesteps on the host."""

    @abstractmethod
    def start(self, sched, noise: torch.Tensor, z_ref: torch.Tensor | None, strengths: list[float],
              x_T: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """(host timesteps to run, start latents, each row's start step among them): pure noise, an SDEdit start
        (z_ref noised to each row's strength), or a given start ``x_T``."""

    def scale_model_input(self, sched, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x

    def step_noise(self, sched, steps: int, shape: tuple, gen: torch.Generator,
                   device: torch.device) -> torch.Tensor | None:
        """Every step's fresh noise for a stochastic sampler, (steps, 1, *shape), drawn from ``gen`` before the loop
        and moved to ``device`` in one copy (a host draw copied inside the loop is a host sync per step on a GPU);
        None for a deterministic sampler."""
        return None

    @abstractmethod
    def step(self, sched, pred: torch.Tensor, t: torch.Tensor, x: torch.Tensor,
             noise: torch.Tensor | None = None) -> torch.Tensor:
        """One sampling step from ``x`` at ``t`` given the network output (``noise``: this step's row of
        :meth:`step_noise`)."""

    @abstractmethod
    def add_noise(self, sched, z: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``z`` forward-noised with ``noise`` to the level of timestep ``t`` (inpainting by blending)."""


class DDPMSchedule(Schedule):
    """The AudioLDM family's ᾱ schedule (a diffusers DDIM/DDPM scheduler config; ε- or v-prediction)."""

    kind = "ddpm"

    def __init__(self, scheduler) -> None:
        self.scheduler = scheduler
        self.config = scheduler.config

    @property
    def prediction_type(self) -> str:
        return self.config.prediction_type

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """ᾱ_t of the training schedule (host table): what DDIM inversion and zeta's noise maps read."""
        return self.scheduler.alphas_cumprod

    @property
    def num_train_timesteps(self) -> int:
        return int(self.config.num_train_timesteps)

    @property
    def max_steps(self) -> int:
        return self.num_train_timesteps

    def joint_strengths(self, sampler: str) -> bool:
        """DDIM is one-step (a take that joins late starts exactly as it would alone); DPM-Solver++ is multistep:
        its history (``model_outputs``, ``lower_order_nums``) belongs to the scheduler, not to a row, so a late take
        would get a second-order update built on its ride-along prediction (review finding 7)."""
        return sampler != "dpm"

    def draw(self, z0, gen):
        """Eq. (1) of the paper: t ~ U{0..T−1} and ε ~ 𝒩(0, I)."""
        b = z0.shape[0]
        t = torch.randint(0, self.num_train_timesteps, (b,), generator=gen, device=gen.device).to(z0.device)
        noise = torch.randn(z0.shape, generator=gen, dtype=torch.float32, device=gen.device).to(z0.device, z0.dtype)
        return t, noise

    def training_pair(self, z0, t, noise):
        """z_t = √ᾱ·z0 + √(1−ᾱ)·ε; target ε (or v for v-prediction)."""
        z_t = self.scheduler.add_noise(z0, noise, t)
        target = self.scheduler.get_velocity(z0, noise, t) if self.prediction_type == "v_prediction" else noise
        return z_t, target

    def sampler(self, kind, steps):
        """DDIM (η = 0) or DPM-Solver++ on the training schedule."""
        from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

        config = dict(self.config)
        if kind == "dpm":
            # AudioLDM's (and the toy's) DDIM config says "leading": DPM-Solver++ would then start at t = 951 (25-50
            # steps) or 801 (200) although sampling starts from pure noise. "trailing" starts at T − 1 (diffusers'
            # scheduler docs; Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed").
            config["timestep_spacing"] = "trailing"
        cls = DPMSolverMultistepScheduler if kind == "dpm" else DDIMScheduler
        sched = cls.from_config(config)
        sched.set_timesteps(steps)
        return sched

    def start(self, sched, noise, z_ref, strengths, x_T):
        """SDEdit truncates the schedule at each row's strength; rows that start later ride along (re-noised
        z_ref, see ``stages.sample``) until their step."""
        timesteps = sched.timesteps
        n = noise.shape[0]
        starts = [0 if s >= 1.0 else start_index(s, len(timesteps)) for s in strengths]
        first = min(starts)
        if first > 0 or any(s > first for s in starts):
            timesteps = timesteps[first:]
            if hasattr(sched, "set_begin_index"):
                sched.set_begin_index(first)  # multistep solvers index their sigma tables from here
            latents = sched.add_noise(z_ref.expand_as(noise), noise, timesteps[:1].repeat(n))
            return timesteps, latents, [s - first for s in starts]
        if x_T is not None:
            return timesteps, x_T.to(noise.device, noise.dtype).expand_as(noise).clone(), starts
        return timesteps, noise * sched.init_noise_sigma, starts

    def scale_model_input(self, sched, x, t):
        return sched.scale_model_input(x, t)

    def step(self, sched, pred, t, x, noise=None):
        return sched.step(pred, t, x, return_dict=False)[0]

    def add_noise(self, sched, z, noise, t):
        return sched.add_noise(z, noise, t)


# SA3's sampling defaults (diffusers ``StableAudio3Pipeline.__call__``: logsnr_min −6.2, logsnr_max 2.0).
LOGSNR_MIN, LOGSNR_MAX = -6.2, 2.0


class FlowSchedule(Schedule):
    """Rectified flow with SA3's log-SNR sigma schedule, over a ``FlowMatchEulerDiscreteScheduler`` config."""

    kind = "flow"
    prediction_type = "flow"  # velocity v = ε − x0
    training_sigma = "uniform"  # stage 1-2 noise levels: "uniform" σ ~ U(0, 1), or "logsnr" (see draw)

    def __init__(self, scheduler, *, logsnr_min: float = LOGSNR_MIN, logsnr_max: float = LOGSNR_MAX) -> None:
        self.scheduler = scheduler
        self.config = scheduler.config
        self.logsnr_min, self.logsnr_max = logsnr_min, logsnr_max

    @property
    def num_train_timesteps(self) -> int:
        return int(self.config.num_train_timesteps)

    @property
    def stochastic(self) -> bool:
        return bool(self.config.get("stochastic_sampling", False))

    @property
    def max_steps(self) -> int:
        return 1000  # any count works on a continuous schedule; bounded only to catch typos

    def joint_strengths(self, sampler: str) -> bool:
        return False  # each strength squeezes all steps into [strength, 0]: its own loop

    def grid(self, steps: int) -> list[float]:
        """The sampler's own σ grid for ``steps`` steps, the final 0 included: the log-SNR sigmas after the
        scheduler's ``shift`` / ``shift_terminal`` / karras options, i.e. exactly what :meth:`sampler` steps on
        (FlowEdit integrates on it too)."""
        return [float(v) for v in self.sampler("", steps).sigmas]

    @staticmethod
    def start_step(strength: float, grid: list[float]) -> int:
        """The first step whose σ is at most ``strength``: strength is the start noise level σ, as SDEdit's
        ``init_noise_level`` reads it (1 = from pure noise); never later than the last step."""
        steps = len(grid) - 1
        return next((i for i in range(steps) if grid[i] <= strength + 1e-6), steps - 1)

    def sigmas(self, steps: int, sigma_max: float = 1.0) -> list[float]:
        """The pipeline's own schedule: ``steps`` sigmas from ``sigma_max`` down (the sampler appends the final 0)."""
        from diffusers.pipelines.stable_audio_3.pipeline_stable_audio_3 import logsnr_sigma_schedule

        return logsnr_sigma_schedule(steps, self.logsnr_min, self.logsnr_max, sigma_max=sigma_max)

    def timestep(self, sigma: torch.Tensor | float) -> torch.Tensor | float:
        """The network's time input at noise level σ (σ·num_train_timesteps, as the scheduler sets it; the SA3
        loader normalises num_train_timesteps to 1: the DiT's time input is σ ∈ [0, 1])."""
        return sigma * self.num_train_timesteps

    def draw(self, z0, gen):
        """Rectified-flow training (Liu et al. 2022; Lipman et al. 2023): σ ~ U(0, 1) and ε ~ 𝒩(0, I); the network
        timestep is σ on the scheduler's scale. ``training_sigma = "logsnr"`` draws σ uniformly in the sampler's
        log-SNR range instead (measured no better on toy-flow, docs/quality.md: U(0, 1) stays the default)."""
        b = z0.shape[0]
        sigma = torch.rand((b,), generator=gen, device=gen.device).to(z0.device)
        if self.training_sigma == "logsnr":
            sigma = torch.sigmoid(-(self.logsnr_max - sigma * (self.logsnr_max - self.logsnr_min)))
        noise = torch.randn(z0.shape, generator=gen, dtype=torch.float32, device=gen.device).to(z0.device, z0.dtype)
        return self.timestep(sigma), noise

    def training_pair(self, z0, t, noise):
        """x_σ = (1−σ)·z0 + σ·ε, target v = ε − z0: the velocity SA3's sampler integrates (x0 = x_σ − σ·v)."""
        s = (t.to(torch.float32) / self.num_train_timesteps).view(-1, *([1] * (z0.dim() - 1))).to(z0.dtype)
        return (1 - s) * z0 + s * noise, noise - z0

    def sampler(self, kind, steps):
        """A fresh ``FlowMatchEulerDiscreteScheduler`` on the log-SNR schedule (``kind`` is a DDPM choice: unused)."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        sched = FlowMatchEulerDiscreteScheduler.from_config(dict(self.config))
        sched.set_timesteps(sigmas=self.sigmas(steps))
        return sched

    def start(self, sched, noise, z_ref, strengths, x_T):
        strength = strengths[0]  # one strength per loop (joint_strengths is False)
        starts = [0] * len(strengths)
        if strength < 1.0:
            # The audio-to-audio pipeline's ``init_noise_level``: mix the input with noise at σ = strength and
            # squeeze the whole step count into [strength, 0] (StableAudio3AudioToAudioPipeline, steps 5-6).
            sched.set_timesteps(sigmas=self.sigmas(sched.num_inference_steps, sigma_max=strength))
            return sched.timesteps, (1.0 - strength) * z_ref.expand_as(noise) + strength * noise, starts
        if x_T is not None:
            return sched.timesteps, x_T.to(noise.device, noise.dtype).expand_as(noise).clone(), starts
        return sched.timesteps, noise.clone(), starts

    def step_noise(self, sched, steps, shape, gen, device):
        """The ping-pong re-noise of every step, one (1, *shape) draw per step in the order the pipeline draws
        them (after the start noise), so the values are the pipeline's bit for bit; one host→device copy."""
        if not self.stochastic:
            return None
        draws = [torch.randn((1, *shape), generator=gen, device=gen.device, dtype=torch.float32)
                 for _ in range(steps)]
        return torch.stack(draws).to(device)

    def step(self, sched, pred, t, x, noise=None):
        """The scheduler's own Euler / ping-pong update, except that the ping-pong re-noise (``noise``, from
        :meth:`step_noise`) is shared by the batch, so every take sees the same noise and one take alone equals
        itself in a batch (and, batch 1, the pipeline bit for bit: same draws, same arithmetic)."""
        if not self.stochastic:
            return sched.step(pred, t, x, return_dict=False)[0]
        if noise is None:
            raise ValueError("a ping-pong step needs its pre-drawn noise (FlowSchedule.step_noise)")
        if sched.step_index is None:
            sched._init_step_index(t)
        i = sched.step_index
        sigma, sigma_next = sched.sigmas[i], sched.sigmas[i + 1]  # host scalars: no device copy
        x = x.to(torch.float32)
        x0 = x - sigma * pred
        out = (1.0 - sigma_next) * x0 + sigma_next * noise.expand_as(x0)
        sched._step_index += 1
        return out.to(pred.dtype)

    def add_noise(self, sched, z, noise, t):
        """x_σ = (1 − σ)·z + σ·noise. SA3 inpaints with its own masked conditioning and never blends, but ACE-Step's
        latent-blending inpainting (its plain edits with ``--inpaint``) runs on this (issue 25 found it unused
        before ACE-Step landed)."""
        sigma = (t.to(z.device, torch.float32) / self.num_train_timesteps).view(-1, *([1] * (z.dim() - 1)))
        return ((1.0 - sigma) * z + sigma * noise).to(z.dtype)


class ShiftedFlowSchedule(FlowSchedule):
    """Rectified flow sampled on ACE-Step 1.5's grid: σ_i = shift(1 − i/N) for i < N, shift(σ) = s·σ / (1 + (s − 1)·σ)
    (``AceStepPipeline._get_timestep_schedule``, computed as it does in float32, so the grid is the pipeline's bit
    for bit), plain Euler steps. ``shift`` is the checkpoint's: 3 for turbo (its distilled 8-step tables are this
    formula at s = 3), 1 for base and sft (ACE-Step's own per-checkpoint defaults). Training draws and noising are
    :class:`FlowSchedule`'s: the DiT's time input is σ ∈ [0, 1] as well."""

    def __init__(self, scheduler, *, shift: float) -> None:
        super().__init__(scheduler)
        if not shift > 0:
            raise ValueError(f"shift must be > 0, got {shift!r}")
        self.shift = float(shift)

    @property
    def stochastic(self) -> bool:
        return False

    def sigmas(self, steps: int, sigma_max: float = 1.0) -> list[float]:
        """``steps`` sigmas from ``sigma_max`` down (the sampler appends the final 0). Below 1 the whole shifted
        grid is scaled into [sigma_max, 0]: an SDEdit start keeps every step, as SA3's audio-to-audio does."""
        t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float32)
        if self.shift != 1.0:
            t = self.shift * t / (1 + (self.shift - 1) * t)
        if sigma_max < 1.0:
            t = t * sigma_max
        return t[:-1].tolist()
