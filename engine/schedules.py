"""What a model's noise process means to the stages: the training pair, the sampler, and the noising of a known
latent, behind one small interface so the three stages never ask which kind of model they run on.

- :class:`DDPMSchedule` wraps the diffusers scheduler of the AudioLDM family (an ᾱ schedule; the network predicts
  ε or v). Its behaviour is exactly what the stages did before this module existed.
- :class:`FlowSchedule` is rectified flow as Stable Audio 3 uses it (x_σ = (1 − σ)·x0 + σ·ε, the network predicts
  the velocity v = ε − x0, so x0 = x_σ − σ·v; diffusers' ``FlowMatchEulerDiscreteScheduler``), sampled on the SA3
  pipeline's log-SNR sigma schedule (``logsnr_sigma_schedule``), with the distilled checkpoints' ping-pong
  re-noising or plain Euler steps.

A sampler is the diffusers scheduler object (stateful, one per sampling run); the schedule owns every operation the
stages apply to it, so a family brings its own without the stages changing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch


class Schedule(ABC):
    """The prediction / loss / sampling rules of one model."""

    kind: str  # "ddpm" | "flow"
    config: Any  # the wrapped diffusers scheduler's config

    @property
    @abstractmethod
    def max_steps(self) -> int:
        """The most sampling steps that make sense (the training grid for DDPM)."""

    @abstractmethod
    def training_example(self, z0: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor,
                                                                                   torch.Tensor]:
        """(noisy input, network timestep, regression target) for a batch of clean latents; noise levels and noise
        are drawn from ``gen`` (where it lives), then moved to z0's device."""

    @abstractmethod
    def sampler(self, kind: str, steps: int, device: torch.device):
        """A fresh stateful sampler for ``steps`` steps."""

    @abstractmethod
    def start(self, sched, noise: torch.Tensor, z_ref: torch.Tensor | None, strength: float,
              x_T: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(timesteps to run, start latents): pure noise, an SDEdit start (z_ref noised to ``strength``), or a
        given start ``x_T``."""

    def scale_model_input(self, sched, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x

    @abstractmethod
    def step(self, sched, pred: torch.Tensor, t: torch.Tensor, x: torch.Tensor,
             gen: torch.Generator) -> torch.Tensor:
        """One sampling step from ``x`` at ``t`` given the network output."""

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
    def num_train_timesteps(self) -> int:
        return int(self.config.num_train_timesteps)

    @property
    def max_steps(self) -> int:
        return self.num_train_timesteps

    def training_example(self, z0, gen):
        """Eq. (1) of the paper: t ~ U{0..T−1}, z_t = √ᾱ·z0 + √(1−ᾱ)·ε, target ε (or v for v-prediction)."""
        b = z0.shape[0]
        t = torch.randint(0, self.num_train_timesteps, (b,), generator=gen, device=gen.device).to(z0.device)
        noise = torch.randn(z0.shape, generator=gen, dtype=torch.float32, device=gen.device).to(z0.device, z0.dtype)
        z_t = self.scheduler.add_noise(z0, noise, t)
        target = self.scheduler.get_velocity(z0, noise, t) if self.prediction_type == "v_prediction" else noise
        return z_t, t, target

    def sampler(self, kind, steps, device):
        """DDIM (η = 0) or DPM-Solver++ on the training schedule."""
        from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

        cls = DPMSolverMultistepScheduler if kind == "dpm" else DDIMScheduler
        sched = cls.from_config(dict(self.config))
        sched.set_timesteps(steps, device=device)
        return sched

    def start(self, sched, noise, z_ref, strength, x_T):
        timesteps = sched.timesteps
        n = noise.shape[0]
        if strength < 1.0:
            start = min(len(timesteps) - 1, len(timesteps) - max(1, round(strength * len(timesteps))))
            timesteps = timesteps[start:]
            if hasattr(sched, "set_begin_index"):
                sched.set_begin_index(start)  # multistep solvers index their sigma tables from here
            return timesteps, sched.add_noise(z_ref.expand_as(noise), noise, timesteps[:1].repeat(n))
        if x_T is not None:
            return timesteps, x_T.to(noise.device, noise.dtype).expand_as(noise).clone()
        return timesteps, noise * sched.init_noise_sigma

    def scale_model_input(self, sched, x, t):
        return sched.scale_model_input(x, t)

    def step(self, sched, pred, t, x, gen):
        return sched.step(pred, t, x, return_dict=False)[0]

    def add_noise(self, sched, z, noise, t):
        return sched.add_noise(z, noise, t)


# SA3's sampling defaults (diffusers ``StableAudio3Pipeline.__call__``: logsnr_min −6.2, logsnr_max 2.0).
LOGSNR_MIN, LOGSNR_MAX = -6.2, 2.0


class FlowSchedule(Schedule):
    """Rectified flow with SA3's log-SNR sigma schedule, over a ``FlowMatchEulerDiscreteScheduler`` config."""

    kind = "flow"
    prediction_type = "flow"  # velocity v = ε − x0

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

    def sigmas(self, steps: int, sigma_max: float = 1.0) -> list[float]:
        """The pipeline's own schedule: ``steps`` sigmas from ``sigma_max`` down (the sampler appends the final 0)."""
        from diffusers.pipelines.stable_audio_3.pipeline_stable_audio_3 import logsnr_sigma_schedule

        return logsnr_sigma_schedule(steps, self.logsnr_min, self.logsnr_max, sigma_max=sigma_max)

    def timestep(self, sigma: torch.Tensor | float) -> torch.Tensor | float:
        """The network's time input at noise level σ (σ·num_train_timesteps, as the scheduler sets it)."""
        return sigma * self.num_train_timesteps

    def training_example(self, z0, gen):
        """Rectified-flow regression (Liu et al. 2022; Lipman et al. 2023): σ ~ U(0, 1), x_σ = (1−σ)·z0 + σ·ε,
        target v = ε − z0, the velocity SA3's sampler integrates (x0 = x_σ − σ·v)."""
        b = z0.shape[0]
        sigma = torch.rand((b,), generator=gen, device=gen.device).to(z0.device)
        noise = torch.randn(z0.shape, generator=gen, dtype=torch.float32, device=gen.device).to(z0.device, z0.dtype)
        s = sigma.view(-1, *([1] * (z0.dim() - 1))).to(z0.dtype)
        z_t = (1 - s) * z0 + s * noise
        return z_t, self.timestep(sigma), noise - z0

    def sampler(self, kind, steps, device):
        """A fresh ``FlowMatchEulerDiscreteScheduler`` on the log-SNR schedule (``kind`` is a DDPM choice: unused)."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        sched = FlowMatchEulerDiscreteScheduler.from_config(dict(self.config))
        sched.set_timesteps(sigmas=self.sigmas(steps), device=device)
        return sched

    def start(self, sched, noise, z_ref, strength, x_T):
        if strength < 1.0:
            # The audio-to-audio pipeline's ``init_noise_level``: mix the input with noise at σ = strength and
            # squeeze the whole step count into [strength, 0] (StableAudio3AudioToAudioPipeline, steps 5-6).
            sched.set_timesteps(sigmas=self.sigmas(sched.num_inference_steps, sigma_max=strength),
                                device=noise.device)
            return sched.timesteps, (1.0 - strength) * z_ref.expand_as(noise) + strength * noise
        if x_T is not None:
            return sched.timesteps, x_T.to(noise.device, noise.dtype).expand_as(noise).clone()
        return sched.timesteps, noise.clone()

    def step(self, sched, pred, t, x, gen):
        """The scheduler's own Euler / ping-pong update, except that the ping-pong re-noise is drawn once and
        shared by the batch, so every take sees the same noise and one take alone equals itself in a batch (and,
        batch 1, the pipeline bit for bit: same draw from the same generator, same arithmetic)."""
        if not self.stochastic:
            return sched.step(pred, t, x, return_dict=False)[0]
        if sched.step_index is None:
            sched._init_step_index(t)
        i = sched.step_index
        sigma, sigma_next = sched.sigmas[i], sched.sigmas[i + 1]
        x = x.to(torch.float32)
        x0 = x - sigma * pred
        fresh = torch.randn((1, *x.shape[1:]), generator=gen, device=gen.device, dtype=torch.float32)
        out = (1.0 - sigma_next) * x0 + sigma_next * fresh.to(x.device).expand_as(x0)
        sched._step_index += 1
        return out.to(pred.dtype)

    def add_noise(self, sched, z, noise, t):
        sigma = (t.to(z.device, torch.float32) / self.num_train_timesteps).view(-1, *([1] * (z.dim() - 1)))
        return ((1.0 - sigma) * z + sigma * noise).to(z.dtype)
