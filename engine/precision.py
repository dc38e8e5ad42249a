"""Numeric precision and the CUDA fast path, kept out of the stage code.

On a GPU the edit's training steps are launch-bound (notes in docs/performance.md): autocast re-casts every fp32
weight at every step. ``bf16`` instead stores the frozen weights (text encoders, the UNet while it is frozen or under
LoRA) in bfloat16 once. ``auto`` is bf16 on CUDA GPUs that support it and fp32 everywhere else, so the CPU path is
unchanged bit for bit. What stays fp32 on every device:

- the model's *interface* dtype (``AudioModel.dtype``: latents, conditionings), so the tensors that train — e_opt,
  LoRA adapters (peft keeps them in fp32), a full fine-tune's master weights — and the loss;
- the audio codec (``AudioModel.codec_modules``: VAE, vocoder, SA3's SAME): a bf16 decode of the same toy-flow latent
  is 18 dB SNR against fp32, and it moved FlowEdit takes 2-2.7× more than a change of seed (issue 25);
- the conditioning up to the denoiser's first layers that read it (``AudioModel.conditioning_kwargs`` and
  ``conditioning_entries``: SA3's context and global projections, the UNets' cross-attention keys and values): the
  interpolated e(η) was rounded to bf16 at the denoiser's input, so η values 0.01 apart could reach it as one tensor.
  Those layers compute in fp32 and hand bf16 on; the latent and the inpainting input are cast at the boundary.

Also here: the training noise generator (on the model's device on CUDA, the seeded CPU generator elsewhere) and
the optimiser (fused, capturable Adam on CUDA). Compiling the steps is ``engine.graphs``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from engine.errors import InputError
from engine.models.base import AudioModel

PRECISIONS = ("auto", "fp32", "bf16")
# Every float input of the denoisers (AudioLDM/TANGO UNets; SA3's DiT: duration vector and inpainting input too).
# The cast is to the DiT's *current* weight dtype: fp32 while a full fine-tune trains, bf16 otherwise.
UNET_FLOAT_KWARGS = ("encoder_hidden_states", "encoder_hidden_states_1", "class_labels", "global_hidden_states",
                     "local_add_cond")
LOSS_REPORT_EVERY = 10  # stage losses reach the progress callback every N steps (each read is a host sync on CUDA)


def resolve(precision: str, device: torch.device | str) -> torch.dtype:
    """The storage dtype of frozen weights for ``precision`` on ``device``."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    dev = torch.device(device)
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    # auto: bf16 only on a CUDA GPU that has it. Apple GPUs (mps) stay fp32: fp16 there produces noise (diffusers'
    # SA3 docs) and bf16 was not measured on one (engine/devices.py); the CPU stays fp32 (bit-identical path).
    cuda_bf16 = dev.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return torch.bfloat16 if cuda_bf16 else torch.float32


def apply(model: AudioModel, precision: str = "auto", *, compile_unet: bool = False) -> AudioModel:
    """Store the model's weights in the precision's dtype (once: the codec and the conditioning's entry layers in
    the interface dtype) and install the denoiser's boundary casts."""
    wdt = resolve(precision, model.device)
    model.weight_dtype = wdt
    store(model)
    if wdt != model.dtype and not getattr(model.unet, "_aiedit_casts", False):
        entries = model.conditioning_entries()
        ref = _compute_reference(model.unet, entries)
        keep = frozenset(model.conditioning_kwargs) if entries else frozenset()

        def cast_inputs(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            return _cast_inputs(ref.dtype, keep, args, kwargs)
        model.unet.register_forward_pre_hook(cast_inputs, with_kwargs=True)
        model.unet.register_forward_hook(_output_to_fp32)
        for name in entries:  # fp32 layers inside a bf16 denoiser: fp32 in, the denoiser's compute dtype out
            sub = model.unet.get_submodule(name)
            sub.register_forward_pre_hook(lambda mod, args: tuple(_to(a, model.dtype) for a in args))
            sub.register_forward_hook(lambda mod, args, out: _to(out, ref.dtype))
        model.unet._aiedit_casts = True  # type: ignore[attr-defined]
    if compile_unet:
        from engine import graphs

        graphs.enable(model, mode=graphs.default_mode(model.device))
    return model


def store(model: AudioModel) -> None:
    """Each module in its storage dtype (``AudioModel.storage_dtype``: the codec in the interface dtype, the rest
    in the weight dtype), then the conditioning's entry layers of a low-precision denoiser back in the interface
    dtype. Also what a full fine-tune's exit calls, since it moves the whole denoiser."""
    for name, module in model.modules().items():
        target = model.storage_dtype(name)
        if any(p.dtype != target for p in module.parameters()):
            torch.nn.Module.to(module, dtype=target)  # (diffusers' own ``to`` warns about from_pretrained here)
    if low_precision(model):
        for name in model.conditioning_entries():
            torch.nn.Module.to(model.unet.get_submodule(name), dtype=model.dtype)


def weight_dtype(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _compute_reference(unet: torch.nn.Module, entries: list[str]) -> torch.nn.Parameter:
    """A denoiser weight outside the entry layers: its dtype is the one the denoiser computes in (bf16, or fp32
    while a full fine-tune trains its master weights). Module casts change a parameter's data in place, so the
    reference follows them."""
    inside = tuple(f"{e}." for e in entries)
    return next(p for n, p in unet.named_parameters() if not n.startswith(inside))


def _to(x, dtype: torch.dtype):
    return x.to(dtype) if torch.is_tensor(x) and x.is_floating_point() and x.dtype != dtype else x


def _cast_inputs(wdt: torch.dtype, keep: frozenset, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The latent and the float inputs of :data:`UNET_FLOAT_KWARGS` → the denoiser's compute dtype, except the
    conditioning in ``keep`` (its entry layers read it in fp32). Timesteps and masks are left alone: a bf16
    timestep would round 999 to 1000."""
    if args and torch.is_tensor(args[0]) and args[0].is_floating_point():
        args = (args[0].to(wdt), *args[1:])
    kwargs = {k: (_to(v, wdt) if k in UNET_FLOAT_KWARGS and k not in keep else v) for k, v in kwargs.items()}
    return args, kwargs


def _output_to_fp32(module: torch.nn.Module, args: tuple, output):
    if isinstance(output, tuple) and output and torch.is_tensor(output[0]):
        return (output[0].float(), *output[1:])
    if hasattr(output, "sample"):
        output.sample = output.sample.float()
    return output


def low_precision(model: AudioModel) -> bool:
    """True when ``apply`` stored the weights in a lower precision than the model's interface dtype."""
    return model.weight_dtype is not None and model.weight_dtype != torch.float32


@contextlib.contextmanager
def full_finetune_weights(model: AudioModel) -> Iterator[None]:
    """A full fine-tune (and sampling with its result) runs in fp32 with TF32 matmuls, also when the UNet is
    stored in bf16: bf16 autocast over fp32 master weights measured slowest on an H100 (201 ms a step against 150
    fp32 / 162 TF32, /work/shared/notes/gpu.md) and its casts cost launches, and at the paper's rate (1e-6) a
    bf16 copy of the result would round most of the drift away. On exit the UNet is stored in its weight dtype
    again (the caller restores the pretrained values)."""
    with tf32():
        if not low_precision(model):
            yield
            return
        torch.nn.Module.float(model.unet)
        try:
            yield
        finally:
            store(model)


@contextlib.contextmanager
def tf32() -> Iterator[None]:
    """TF32 for CUDA matmuls and convolutions inside the block (no effect on a CPU)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def generator(seed: int, device: torch.device | str) -> torch.Generator:
    """Training noise source: on a CUDA model the generator lives on the GPU (no host→device copy per step); on
    the CPU it is the seeded CPU generator as always, so CPU results stay bit for bit what they were."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.Generator(device=dev).manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def adam_options(device: torch.device | str) -> dict[str, bool]:
    """Adam's flags for parameters on ``device``: on CUDA the fused kernel (one launch for every tensor) and
    ``capturable`` (step counters stay on the GPU, so a step never reads one back and can sit in a CUDA graph)."""
    return {"fused": True, "capturable": True} if torch.device(device).type == "cuda" else {}


def optimizer(params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """Adam, with :func:`adam_options` when every parameter is a CUDA float tensor."""
    cuda = bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=lr, **adam_options("cuda" if cuda else "cpu"))
