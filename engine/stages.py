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

from engine import precision
from engine.models.base import AudioModel, Conditioning

StepFn = Callable[[int, int, float | None], None]  # (step, total, loss) — may raise Cancelled


def _noop(step: int, total: int, loss: float | None) -> None:
    return None


def diffusion_loss(model: AudioModel, z0: torch.Tensor, cond: Conditioning, gen: torch.Generator) -> torch.Tensor:
    """Eq. (1): noise z0 at a random level and regress the model's target (ε / v for the ᾱ family, the velocity
    for flow models): the pair comes from ``model.schedule`` (engine.schedules).

    Levels and noise are drawn where ``gen`` lives (the seeded CPU generator, or the GPU's on the CUDA fast path)."""
    z_t, t, target = model.schedule.training_example(z0, gen)
    pred = model.predict_noise(z_t, t, cond)
    return F.mse_loss(pred.float(), target.float())


def optimize_embedding(model: AudioModel, z0: torch.Tensor, e_target: Conditioning, *, steps: int, lr: float,
                       seed: int, on_step: StepFn = _noop) -> tuple[Conditioning, list[float]]:
    """Stage 1: Adam on the conditioning tensors only (masks and UNet stay fixed)."""
    e = e_target.trainable()
    model.unet.requires_grad_(False)
    losses = _train(model, z0, e, e.parameters(), steps, lr, precision.generator(seed, model.device), on_step)
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
    gen = precision.generator(seed + 1, model.device)
    e = e_opt.detach()
    losses: list[float] = []
    if mode == "lora":
        from peft import get_peft_model_state_dict
        from peft.tuners.lora import LoraModel

        targets = tuple(model.lora_target_modules())
        with torch.random.fork_rng(devices=[]):  # the adapters' random init follows the edit's seed, not the
            torch.manual_seed(seed + 2)           # global RNG (else one request gives other takes per process)
            lora = LoraModel(model.unet, _lora_config(rank, targets), ADAPTER)
        try:
            params = [p for p in model.unet.parameters() if p.requires_grad]
            for p in params:  # adapters train in fp32 even on a bf16-stored UNet (peft computes them in their dtype)
                if p.dtype != torch.float32:
                    p.data = p.data.float()
            losses = _train(model, z0, e, params, steps, lr, gen, on_step)
            state = {k: v.detach().cpu().clone()
                     for k, v in get_peft_model_state_dict(model.unet, adapter_name=ADAPTER).items()}
        finally:
            lora.unload()
            model.unet.requires_grad_(False)
        return Tuning("lora", state, rank, targets), losses
    if mode == "full":
        base = pretrained_state(model.unet)
        try:
            with precision.full_finetune_weights(model):  # fp32 master weights when the UNet is stored in bf16
                model.unet.requires_grad_(True)
                losses = _train(model, z0, e, list(model.unet.parameters()), steps, lr, gen, on_step)
                state = _snapshot(model.unet, dtype=model.weight_dtype)
        finally:
            model.unet.requires_grad_(False)
            _restore(model.unet, base)
        return Tuning("full", state), losses
    raise ValueError(f"unknown fine-tuning mode {mode!r}")


def _train(model: AudioModel, z0: torch.Tensor, e: Conditioning, params: list[torch.Tensor], steps: int,
           lr: float, gen: torch.Generator, on_step: StepFn) -> list[float]:
    """Adam on ``params``. Losses stay on the device and reach ``on_step`` every few steps only (a read is a host
    sync on a GPU); all of them are returned at the end."""
    if steps == 0 or not params:
        return []
    opt = precision.optimizer(params, lr)
    kept: list[torch.Tensor] = []
    with torch.enable_grad():
        for i in range(steps):
            opt.zero_grad(set_to_none=True)
            with precision.train_autocast(model):
                loss = diffusion_loss(model, z0, e, gen)
            loss.backward()
            opt.step()
            kept.append(loss.detach())
            last = i + 1 == steps
            shown = loss.item() if last or (i + 1) % precision.LOSS_REPORT_EVERY == 0 else None
            on_step(i + 1, steps, shown)
    return torch.stack(kept).float().cpu().tolist()


def _snapshot(module: torch.nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """A CPU copy of the module's state, optionally stored as ``dtype`` (floating tensors only)."""
    return {k: v.detach().to("cpu", dtype=dtype if dtype is not None and v.is_floating_point() else v.dtype,
                             copy=True)
            for k, v in module.state_dict().items()}


def _fingerprint(module: torch.nn.Module) -> tuple:
    """Changes whenever a weight is written in place (``_version``) or replaced (``data_ptr``)."""
    return tuple((t.data_ptr(), t._version) for t in module.state_dict().values())


def pretrained_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The one CPU copy of the pretrained UNet that full-mode stages restore from, taken once per loaded model
    (a real UNet is 1.7-3.5 GB: a copy per fine-tune and per sampling run is what filled 17-21 GB of host RAM).
    Taken again only if the weights were changed by anything but these stages."""
    cached = getattr(module, "_aiedit_pretrained", None)
    if cached is None or cached[0] != _fingerprint(module):
        cached = (_fingerprint(module), _snapshot(module))
        module._aiedit_pretrained = cached  # type: ignore[attr-defined]
    return cached[1]


def _restore(module: torch.nn.Module, base: dict[str, torch.Tensor]) -> None:
    module.load_state_dict(base)
    module._aiedit_pretrained = (_fingerprint(module), base)  # type: ignore[attr-defined]


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
    base = pretrained_state(model.unet)
    try:
        model.unet.load_state_dict(tuning.state)
        yield
    finally:
        _restore(model.unet, base)


def make_sampler(model: AudioModel, kind: str, steps: int):
    """A fresh sampling scheduler (stateful) on the model's schedule: DDIM (η=0) or DPM-Solver++ on the ᾱ family,
    the flow models' own Euler / ping-pong sampler on its sigma schedule."""
    return model.schedule.sampler(kind, steps, model.device)


def guided_prediction(model: AudioModel, x: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                      uncond: Conditioning | None, guidance: float) -> torch.Tensor:
    """The model's output for the batch ``x`` at timestep ``t``, with classifier-free guidance against ``uncond``
    (one batched call for both branches) when it is given and ``guidance`` > 1."""
    n = x.shape[0]
    tt = t.expand(n).to(model.device)
    if uncond is None or guidance <= 1.0:
        return model.predict_noise(x, tt, cond)
    both = Conditioning.cat([uncond.repeat(n), cond])
    out_u, out_c = model.predict_noise(torch.cat([x, x]), torch.cat([tt, tt]), both).chunk(2)
    return out_u + guidance * (out_c - out_u)


@torch.no_grad()
def sample(model: AudioModel, conds: list[Conditioning], uncond: Conditioning | None, *, latent_shape: tuple,
           steps: int, guidance: float, seed: int, sampler: str = "ddim", z_ref: torch.Tensor | None = None,
           keep: torch.Tensor | None = None, strength: float = 1.0, x_T: torch.Tensor | None = None,
           on_step: StepFn = _noop) -> torch.Tensor:
    """Denoise one latent per conditioning, all in one batch; returns (len(conds), *latent_shape).

    Every take starts from the same seeded noise, so takes differ only by their conditioning and a take is
    reproducible alone or in any batch. ``guidance`` ≤ 1 disables classifier-free guidance. ``strength`` < 1
    starts from z_ref noised to that level (SDEdit; on a flow model the audio-to-audio ``init_noise_level``).
    ``keep`` (broadcastable to the latent, 1 = keep) inpaints: with the model's own masked conditioning when it
    has one (SA3), else by blending in z_ref forward-noised to each step's level outside the region.
    """
    n = len(conds)
    schedule = model.schedule
    sched = make_sampler(model, sampler, steps)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((1, *latent_shape), generator=gen, dtype=torch.float32)
    noise = noise.to(model.device, model.dtype).expand(n, *latent_shape).clone()
    if strength < 1.0 and z_ref is None:
        raise ValueError("SDEdit needs the input latent")
    timesteps, latents = schedule.start(sched, noise, z_ref, strength, x_T)
    cond = Conditioning.cat(conds)
    with model.masked_conditioning(z_ref if keep is not None else None, keep) as native:
        for i, t in enumerate(timesteps):
            pred = guided_prediction(model, schedule.scale_model_input(sched, latents, t), t, cond, uncond, guidance)
            latents = schedule.step(sched, pred, t, latents, gen)
            if keep is not None and z_ref is not None and not native:
                known = z_ref.expand_as(latents)
                if i + 1 < len(timesteps):
                    known = schedule.add_noise(sched, known, noise, timesteps[i + 1].expand(n))
                latents = keep * known + (1 - keep) * latents
            on_step(i + 1, len(timesteps), None)
    return latents
