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

from engine import calls, graphs, precision
from engine.models.base import AudioModel, Conditioning
from engine.schedules import start_index

__all__ = ["Tuning", "diffusion_loss", "draw_noise", "finetune", "guidance_batch", "guided_prediction", "loss_at",
           "make_sampler", "optimize_embedding", "pretrained_state", "sample", "start_index", "tuned"]

StepFn = Callable[[int, int, float | None], None]  # (step, total, loss) — may raise Cancelled


def _noop(step: int, total: int, loss: float | None) -> None:
    return None


def diffusion_loss(model: AudioModel, z0: torch.Tensor, cond: Conditioning, gen: torch.Generator) -> torch.Tensor:
    """Eq. (1): noise z0 at a random level and regress the model's target (ε or v on the ᾱ family, the velocity on
    flow models): the draw and the pair come from ``model.schedule`` (engine.schedules)."""
    return loss_at(model, z0, cond, *draw_noise(model, z0, gen))


def draw_noise(model: AudioModel, z0: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One (timestep, noise) draw per row of z0, where ``gen`` lives (the seeded CPU generator, or the GPU's on the
    CUDA fast path). Kept apart from :func:`loss_at` so the compiled training step takes the draw as an input."""
    return model.schedule.draw(z0, gen)


def loss_at(model: AudioModel, z0: torch.Tensor, cond: Conditioning, t: torch.Tensor,
            noise: torch.Tensor) -> torch.Tensor:
    """The loss of one drawn (t, noise) per row: the network part of a training step (one graph when compiled)."""
    z_t, target = model.schedule.training_pair(z0, t, noise)
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
             rank: int, seed: int, draws: int = 1, on_step: StepFn = _noop) -> tuple[Tuning, list[float]]:
    """Stage 2: fit the UNet to z0 under e_opt; returns the tuned weights and leaves the model untouched.

    ``draws`` > 1 averages the loss over that many (t, ε) draws per step, in one batch: the paper's number of
    draws in ``draws``× fewer sequential UNet calls (on a GPU a batch of 4 costs little more than a batch of 1)."""
    gen = precision.generator(seed + 1, model.device)
    e = e_opt.detach()
    losses: list[float] = []
    if mode == "lora":
        from peft import get_peft_model_state_dict
        from peft.tuners.lora import LoraModel

        targets = tuple(model.lora_target_modules())
        # The adapters' random init follows the edit's seed, not the global RNG (else one request gives other takes
        # per process). peft initialises them on the CPU before moving them, so only the CPU generator is reseeded:
        # torch.manual_seed would also reseed every CUDA generator, which fork_rng(devices=[]) does not restore.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed + 2)
            lora = LoraModel(model.unet, _lora_config(rank, targets), ADAPTER)
        try:
            params = _adapters_fp32(model.unet)
            losses = _train(model, z0, e, params, steps, lr, gen, on_step, draws)
            state = {k: v.detach().cpu().clone()
                     for k, v in get_peft_model_state_dict(model.unet, adapter_name=ADAPTER).items()}
        finally:
            lora.unload()
            model.unet.requires_grad_(False)
        return Tuning("lora", state, rank, targets), losses
    if mode == "full":
        base = pretrained_state(model.unet)
        try:
            with precision.full_finetune_weights(model):  # fp32 (+TF32) even when the UNet is stored in bf16
                model.unet.requires_grad_(True)
                losses = _train(model, z0, e, list(model.unet.parameters()), steps, lr, gen, on_step,
                                draws)
                state = _snapshot(model.unet)  # fp32: a bf16 copy would round away drift below bf16's step
        finally:
            model.unet.requires_grad_(False)
            _restore(model.unet, base)
        return Tuning("full", state), losses
    raise ValueError(f"unknown fine-tuning mode {mode!r}")


def _train(model: AudioModel, z0: torch.Tensor, e: Conditioning, params: list[torch.Tensor], steps: int,
           lr: float, gen: torch.Generator, on_step: StepFn, draws: int = 1) -> list[float]:
    """Adam on ``params``, ``draws`` noise draws per step in one batch. Losses stay on the device and reach
    ``on_step`` every few steps only (a read is a host sync on a GPU); all of them are returned at the end."""
    if steps == 0 or not params:
        return []
    if draws > 1:
        z0 = z0.expand(draws, *z0.shape[1:])
    opt = precision.optimizer(params, lr)
    kept: list[torch.Tensor] = []
    step = _training_step(model, opt)
    try:
        with torch.enable_grad():
            for i in range(steps):
                loss = step(z0, e.repeat(draws) if draws > 1 else e, gen)
                kept.append(loss)
                last = i + 1 == steps
                shown = loss.item() if last or (i + 1) % precision.LOSS_REPORT_EVERY == 0 else None
                on_step(i + 1, steps, shown)
    finally:
        opt.zero_grad(set_to_none=True)  # no parameter keeps a gradient (a UNet-sized one in full mode)
    return torch.stack(kept).float().cpu().tolist()


def _training_step(model: AudioModel, opt: torch.optim.Optimizer) -> Callable:
    """One optimiser step: the draw (eager), the loss and its backward (one compiled graph when ``engine.graphs``
    is on), Adam (fused and capturable on CUDA). Returns the loss, detached (a copy: a replayed CUDA graph
    overwrites its outputs)."""
    loss_fn = graphs.compiled(model, "loss", lambda z0, c, t, noise: loss_at(model, z0, c, t, noise))

    def step(z0: torch.Tensor, cond: Conditioning, gen: torch.Generator) -> torch.Tensor:
        t, noise = draw_noise(model, z0, gen)
        calls.tick(model)
        graphs.step_begin(model)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(z0, cond, t, noise)
        loss.backward()
        opt.step()
        return loss.detach().clone()
    return step


def _adapters_fp32(unet: torch.nn.Module) -> list[torch.Tensor]:
    """The LoRA adapter weights, in fp32 even on a bf16-stored UNet (peft creates them in the base layer's dtype
    and computes each adapter in its own dtype); returns them."""
    params = [p for n, p in unet.named_parameters() if "lora_" in n]
    for p in params:
        if p.dtype != torch.float32:
            p.data = p.data.float()
    return [p for p in params if p.requires_grad]


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
            _adapters_fp32(model.unet)  # before loading: sample with the trained fp32 values, not a bf16 rounding
            set_peft_model_state_dict(model.unet, tuning.state, adapter_name=ADAPTER)
            model.unet.requires_grad_(False)
            yield
        finally:
            lora.unload()
        return
    base = pretrained_state(model.unet)
    try:
        with precision.full_finetune_weights(model):  # the fp32 fine-tuned weights, sampled in fp32 (+TF32)
            model.unet.load_state_dict(tuning.state)
            yield
    finally:
        _restore(model.unet, base)


def make_sampler(model: AudioModel, kind: str, steps: int):
    """A fresh sampling scheduler (stateful) on the model's schedule: DDIM (η=0) or DPM-Solver++ on the ᾱ family,
    the flow models' own Euler / ping-pong sampler on their sigma schedule (engine.schedules).

    Its tables and timesteps stay on the host: the loop indexes them with host timesteps (a device timestep
    indexing a host table is a sync per step, and no graph capture is possible); the network gets the device
    copy that :func:`sample` makes once."""
    return model.schedule.sampler(kind, steps)


def guidance_batch(cond: Conditioning, uncond: Conditioning) -> Conditioning:
    """The classifier-free-guidance conditioning of a batch: the empty prompt's rows, then ``cond``'s."""
    return Conditioning.cat([uncond.repeat(cond.batch_size), cond])


def _network(model: AudioModel) -> Callable:
    return graphs.compiled(model, "network", lambda x, t, c: model.predict_noise(x, t, c))


def _guided(model: AudioModel) -> Callable:
    def step(x2: torch.Tensor, t2: torch.Tensor, both: Conditioning, g) -> torch.Tensor:
        # unflatten, not chunk(2): both halves then have one symbolic size, so batch 2 (one η) needs no own graph
        out_u, out_c = model.predict_noise(x2, t2, both).unflatten(0, (2, -1)).unbind(0)
        return out_u + g * (out_c - out_u)
    return graphs.compiled(model, "guided", step)


def guided_prediction(model: AudioModel, x: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                      uncond: Conditioning | None, guidance: float, *,
                      both: Conditioning | None = None, rule: Callable | None = None) -> torch.Tensor:
    """The model's output for the batch ``x`` at timestep ``t``, with classifier-free guidance against ``uncond``
    (one batched call for both branches) when it is given and ``guidance`` > 1. ``both`` is
    ``guidance_batch(cond, uncond)`` when the caller built it once for many steps. ``rule`` is the model's own
    combine of the two branches (``AudioModel.guidance_rule``), applied after the network call. One network call
    either way; it is the sampling step that ``engine.graphs`` compiles (a dynamic batch: any η count, one graph)."""
    n = x.shape[0]
    tt = (t.expand(n) if t.dim() == 0 else t).to(model.device)
    calls.tick(model)
    compiling = graphs.enabled(model)
    if rule is not None and uncond is not None and guidance > 1.0:
        both = both if both is not None else guidance_batch(cond, uncond)
        out = _network(model)(torch.cat([x, x]), torch.cat([tt, tt]), both)
        out_u, out_c = out.unflatten(0, (2, -1)).unbind(0)
        return rule(out_u, out_c, guidance)
    if uncond is None or guidance <= 1.0:
        if not compiling:
            return model.predict_noise(x, tt, cond)
        xp, tp, cp, n = graphs.pad_batch(x, tt, cond)
        graphs.mark_batch_dynamic(xp, cp)
        graphs.mark_batch_dynamic(tp)
        return _network(model)(xp, tp, cp)[:n]
    if compiling and n < graphs.MIN_DYNAMIC_BATCH:  # one take: pad it, or its halves of size 1 get own graphs
        x, tt, cond, n = graphs.pad_batch(x, tt, cond)
        both = None
    if both is None:
        both = guidance_batch(cond, uncond)
    x2, t2 = torch.cat([x, x]), torch.cat([tt, tt])
    if not compiling:
        return _guided(model)(x2, t2, both, guidance)
    graphs.mark_batch_dynamic(x2, both)
    graphs.mark_batch_dynamic(t2)
    return _guided(model)(x2, t2, both, graphs.scalar(model, guidance, x))[:n]


@torch.no_grad()
def sample(model: AudioModel, conds: list[Conditioning], uncond: Conditioning | None, *, latent_shape: tuple,
           steps: int, guidance: float, seed: int, sampler: str = "ddim", z_ref: torch.Tensor | None = None,
           keep: torch.Tensor | None = None, strength: float | list[float] = 1.0, x_T: torch.Tensor | None = None,
           on_step: StepFn = _noop) -> torch.Tensor:
    """Denoise one latent per conditioning, all in one batch; returns (len(conds), *latent_shape).

    Every take starts from the same seeded noise, so takes differ only by their conditioning and a take is
    reproducible alone or in any batch. ``guidance`` ≤ 1 disables classifier-free guidance. ``strength`` < 1
    starts from z_ref noised to that level (SDEdit; on a flow model the audio-to-audio ``init_noise_level``); a
    list gives each take its own strength, all in one loop where the schedule allows (a take rides along as z_ref
    re-noised to the current level until its start step; a flow model runs one loop per strength). ``keep``
    (broadcastable to the latent, 1 = keep) inpaints: with the model's own masked conditioning when it has one
    (SA3), else by blending in z_ref forward-noised to each step's level outside the region.
    """
    n = len(conds)
    schedule = model.schedule
    strengths = [float(x) for x in strength] if isinstance(strength, list) else [float(strength)] * n
    if len(strengths) != n:
        raise ValueError("one strength per conditioning")
    if min(strengths) < 1.0 and z_ref is None:
        raise ValueError("SDEdit needs the input latent")
    if len(set(strengths)) > 1 and not schedule.joint_strengths(sampler):
        # One loop per distinct strength (its takes batched); the rows come back in the caller's order. Progress
        # counts the loops as one run of ``steps`` each, so it never goes back (a loop that truncates its grid
        # ends early and the count jumps to the next loop's start).
        out = torch.empty((n, *latent_shape), device=model.device, dtype=model.dtype)
        levels = list(dict.fromkeys(strengths))
        for k, level in enumerate(levels):
            rows = [j for j, x in enumerate(strengths) if x == level]

            def counted(i: int, total: int, loss: float | None, k: int = k) -> None:
                on_step(k * steps + min(i, steps), steps * len(levels), loss)
            out[rows] = sample(model, [conds[j] for j in rows], uncond, latent_shape=latent_shape, steps=steps,
                               guidance=guidance, seed=seed, sampler=sampler, z_ref=z_ref, keep=keep,
                               strength=level, x_T=x_T, on_step=counted)
        return out
    sched = make_sampler(model, sampler, steps)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((1, *latent_shape), generator=gen, dtype=torch.float32)
    noise = noise.to(model.device, model.dtype).expand(n, *latent_shape).clone()
    timesteps, latents, starts = schedule.start(sched, noise, z_ref, strengths, x_T)  # host timesteps
    step_noise = schedule.step_noise(sched, len(timesteps), tuple(latent_shape), gen, model.device)
    late = None  # (n, 1, …) rows that have not started yet at the current step
    if max(starts) > 0:
        late = torch.tensor(starts, device=model.device).view(n, *([1] * len(latent_shape)))
    cond = Conditioning.cat(conds)
    both = guidance_batch(cond, uncond) if uncond is not None and guidance > 1.0 else None
    rule = model.guidance_rule() if both is not None else None  # fresh per run: a rule may keep state (momentum)
    t_dev = timesteps.to(model.device)  # one copy for the whole loop
    with model.masked_conditioning(z_ref if keep is not None else None, keep) as native:
        for i, t in enumerate(timesteps):
            if late is not None and i > 0 and max(starts) >= i:  # rows starting now (or later) sit at this level
                assert z_ref is not None
                latents = torch.where(late >= i, schedule.add_noise(sched, z_ref.expand_as(noise), noise,
                                                                    t_dev[i].expand(n)), latents)
            pred = guided_prediction(model, schedule.scale_model_input(sched, latents, t), t_dev[i], cond, uncond,
                                     guidance, both=both, rule=rule)
            latents = schedule.step(sched, pred, t, latents, None if step_noise is None else step_noise[i])
            if keep is not None and z_ref is not None and not native:
                known = z_ref.expand_as(latents)
                if i + 1 < len(timesteps):
                    known = schedule.add_noise(sched, known, noise, t_dev[i + 1].expand(n))
                latents = keep * known + (1 - keep) * latents
            on_step(i + 1, len(timesteps), None)
    return latents
