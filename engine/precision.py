"""Numeric precision and the CUDA fast path, kept out of the stage code.

On a GPU the edit's training steps are launch-bound (notes in docs/performance.md): autocast re-casts every fp32
weight at every step. ``bf16`` instead stores the frozen weights (text encoders, VAE, vocoder, the UNet while it is
frozen or under LoRA) in bfloat16 once. The model's *interface* dtype (``AudioModel.dtype``: latents, conditionings)
stays float32, so the tensors that train — e_opt, LoRA adapters (peft keeps them in fp32), a full fine-tune's
master weights — and the loss stay fp32; hooks cast at the UNet's boundary. ``auto`` is bf16 on CUDA GPUs that
support it and fp32 everywhere else, so the CPU path is unchanged bit for bit.

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
    """Store the model's weights in the precision's dtype (once) and install the UNet boundary casts."""
    wdt = resolve(precision, model.device)
    model.weight_dtype = wdt
    for module in model.modules().values():
        if any(p.dtype != wdt for p in module.parameters()):
            torch.nn.Module.to(module, dtype=wdt)  # (diffusers' own ``to`` warns about from_pretrained here)
    if wdt != torch.float32 and not getattr(model.unet, "_aiedit_casts", False):
        model.unet.register_forward_pre_hook(_cast_inputs, with_kwargs=True)
        model.unet.register_forward_hook(_output_to_fp32)
        model.unet._aiedit_casts = True  # type: ignore[attr-defined]
    if compile_unet:
        from engine import graphs

        graphs.enable(model, mode=graphs.default_mode(model.device))
    return model


def weight_dtype(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _cast_inputs(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Latents and conditioning tensors → the UNet's weight dtype (timesteps and masks are left alone: a bf16
    timestep would round 999 to 1000)."""
    wdt = weight_dtype(module)  # fp32 while a full fine-tune trains its master weights (autocast does the rest)
    if args and torch.is_tensor(args[0]) and args[0].is_floating_point():
        args = (args[0].to(wdt), *args[1:])
    kwargs = {k: (v.to(wdt) if k in UNET_FLOAT_KWARGS and torch.is_tensor(v) and v.is_floating_point() else v)
              for k, v in kwargs.items()}
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
            torch.nn.Module.to(model.unet, dtype=model.weight_dtype)


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
