"""The paper's three stages (§2) plus the SDEdit preview, written once against :class:`AudioModel`.

1. ``optimize_embedding``: e_opt = argmin_e E_t,ε ‖target − f_θ(z_t, t, e)‖², initialised at e_target, UNet frozen.
2. ``finetune``: the same loss over the UNet's weights (all of them, or LoRA adapters via ``peft``), e_opt fixed.
   The tuned weights are returned as a :class:`Tuning` and the model is put back exactly as it was; ``tuned()``
   applies them for sampling and restores the pretrained weights afterwards, so the next edit starts clean.
3. ``sample``: one batched denoising run for all conditionings (one per η), with classifier-free guidance against
   the empty prompt and optional inpainting by latent blending.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.models.base import AudioModel, Conditioning

StepFn = Callable[[int, int, float | None], None]  # (step, total, loss) — may raise Cancelled


def _noop(step: int, total: int, loss: float | None) -> None:
    return None


def diffusion_loss(model: AudioModel, z0: torch.Tensor, cond: Conditioning, gen: torch.Generator) -> torch.Tensor:
    """Eq. (1): noise z0 at t ~ U{0..T−1} and regress the scheduler's target (ε, or v for v-prediction models)."""
    b = z0.shape[0]
    t = torch.randint(0, model.num_train_timesteps, (b,), generator=gen).to(z0.device)
    noise = torch.randn(z0.shape, generator=gen, dtype=torch.float32).to(z0.device, z0.dtype)
    z_t = model.scheduler.add_noise(z0, noise, t)  # type: ignore[attr-defined]
    if model.prediction_type == "v_prediction":
        target = model.scheduler.get_velocity(z0, noise, t)  # type: ignore[attr-defined]
    else:
        target = noise
    pred = model.predict_noise(z_t, t, cond)
    return F.mse_loss(pred.float(), target.float())


def optimize_embedding(model: AudioModel, z0: torch.Tensor, e_target: Conditioning, *, steps: int, lr: float,
                       seed: int, on_step: StepFn = _noop) -> tuple[Conditioning, list[float]]:
    """Stage 1: Adam on the conditioning tensors only (masks and UNet stay fixed)."""
    e = e_target.trainable()
    model.unet.requires_grad_(False)
    losses = _train(model, z0, e, e.parameters(), steps, lr, torch.Generator().manual_seed(seed), on_step)
    return e.detach(), losses


@dataclass
class Tuning:
    """Stage-2 result: LoRA adapter weights or the full fine-tuned UNet state (CPU tensors)."""

    mode: str
    state: dict[str, torch.Tensor]
    rank: int = 0
    target_modules: tuple[str, ...] = ()

    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.state.values())


ADAPTER = "aiedit"


def _lora_config(rank: int, targets: list[str] | tuple[str, ...]):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=list(targets))


def finetune(model: AudioModel, z0: torch.Tensor, e_opt: Conditioning, *, mode: str, steps: int, lr: float,
             rank: int, seed: int, on_step: StepFn = _noop) -> tuple[Tuning, list[float]]:
    """Stage 2: fit the UNet to z0 under e_opt; returns the tuned weights and leaves the model untouched."""
    gen = torch.Generator().manual_seed(seed + 1)
    e = e_opt.detach()
    losses: list[float] = []
    if mode == "lora":
        from peft import get_peft_model_state_dict
        from peft.tuners.lora import LoraModel

        targets = tuple(model.lora_target_modules())
        lora = LoraModel(model.unet, _lora_config(rank, targets), ADAPTER)
        try:
            params = [p for p in model.unet.parameters() if p.requires_grad]
            losses = _train(model, z0, e, params, steps, lr, gen, on_step)
            state = {k: v.detach().cpu().clone()
                     for k, v in get_peft_model_state_dict(model.unet, adapter_name=ADAPTER).items()}
        finally:
            lora.unload()
            model.unet.requires_grad_(False)
        return Tuning("lora", state, rank, targets), losses
    if mode == "full":
        base = _snapshot(model.unet)
        try:
            model.unet.requires_grad_(True)
            losses = _train(model, z0, e, list(model.unet.parameters()), steps, lr, gen, on_step)
            state = _snapshot(model.unet)
        finally:
            model.unet.requires_grad_(False)
            model.unet.load_state_dict(base)
        return Tuning("full", state), losses
    raise ValueError(f"unknown fine-tuning mode {mode!r}")


def _train(model: AudioModel, z0: torch.Tensor, e: Conditioning, params: list[torch.Tensor], steps: int,
           lr: float, gen: torch.Generator, on_step: StepFn) -> list[float]:
    losses: list[float] = []
    if steps == 0 or not params:
        return losses
    opt = torch.optim.Adam(params, lr=lr)
    with torch.enable_grad():
        for i in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = diffusion_loss(model, z0, e, gen)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            on_step(i + 1, steps, losses[-1])
    return losses


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


@contextmanager
def tuned(model: AudioModel, tuning: Tuning | None) -> Iterator[None]:
    """Apply stage-2 weights for the duration of the block; the pretrained UNet is restored bit for bit."""
    if tuning is None:
        yield
        return
    if tuning.mode == "lora":
        from peft import set_peft_model_state_dict
        from peft.tuners.lora import LoraModel

        lora = LoraModel(model.unet, _lora_config(tuning.rank, tuning.target_modules), ADAPTER)
        try:
            set_peft_model_state_dict(model.unet, tuning.state, adapter_name=ADAPTER)
            model.unet.requires_grad_(False)
            yield
        finally:
            lora.unload()
        return
    base = _snapshot(model.unet)
    try:
        model.unet.load_state_dict(tuning.state)
        yield
    finally:
        model.unet.load_state_dict(base)


def make_sampler(model: AudioModel, kind: str, steps: int):
    """A fresh sampling scheduler (stateful) on the model's training schedule: DDIM (η=0) or DPM-Solver++."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    config = dict(model.scheduler.config)  # type: ignore[attr-defined]
    cls = DPMSolverMultistepScheduler if kind == "dpm" else DDIMScheduler
    sched = cls.from_config(config)
    sched.set_timesteps(steps, device=model.device)
    return sched


@torch.no_grad()
def sample(model: AudioModel, conds: list[Conditioning], uncond: Conditioning | None, *, latent_shape: tuple,
           steps: int, guidance: float, seed: int, sampler: str = "ddim", z_ref: torch.Tensor | None = None,
           keep: torch.Tensor | None = None, strength: float = 1.0, x_T: torch.Tensor | None = None,
           on_step: StepFn = _noop) -> torch.Tensor:
    """Denoise one latent per conditioning, all in one batch; returns (len(conds), *latent_shape).

    Every take starts from the same seeded noise, so takes differ only by their conditioning and a take is
    reproducible alone or in any batch. ``guidance`` ≤ 1 disables classifier-free guidance. ``strength`` < 1
    starts from z_ref noised to that level (SDEdit). ``keep`` (broadcastable to the latent, 1 = keep) blends in
    z_ref forward-noised to each step's level outside the region being inpainted.
    """
    n = len(conds)
    sched = make_sampler(model, sampler, steps)
    timesteps = sched.timesteps
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((1, *latent_shape), generator=gen, dtype=torch.float32)
    noise = noise.to(model.device, model.dtype).expand(n, *latent_shape).clone()
    if strength < 1.0:
        if z_ref is None:
            raise ValueError("SDEdit needs the input latent")
        start = min(len(timesteps) - 1, len(timesteps) - max(1, round(strength * len(timesteps))))
        timesteps = timesteps[start:]
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(start)  # multistep solvers index their sigma tables from here
        latents = sched.add_noise(z_ref.expand_as(noise), noise, timesteps[:1].repeat(n))
    elif x_T is not None:
        latents = x_T.to(model.device, model.dtype).expand(n, *latent_shape).clone()
    else:
        latents = noise * sched.init_noise_sigma
    cond = Conditioning.cat(conds)
    use_cfg = uncond is not None and guidance > 1.0
    if use_cfg:
        assert uncond is not None
        both = Conditioning.cat([uncond.repeat(n), cond])
    for i, t in enumerate(timesteps):
        tt = t.expand(n).to(model.device)
        if use_cfg:
            x = sched.scale_model_input(torch.cat([latents, latents]), t)
            pred_u, pred_c = model.predict_noise(x, torch.cat([tt, tt]), both).chunk(2)
            pred = pred_u + guidance * (pred_c - pred_u)
        else:
            pred = model.predict_noise(sched.scale_model_input(latents, t), tt, cond)
        latents = sched.step(pred, t, latents, return_dict=False)[0]
        if keep is not None and z_ref is not None:
            known = z_ref.expand_as(latents)
            if i + 1 < len(timesteps):
                known = sched.add_noise(known, noise, timesteps[i + 1].expand(n))
            latents = keep * known + (1 - keep) * latents
        on_step(i + 1, len(timesteps), None)
    return latents
