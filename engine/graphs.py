"""Graph-ready steps: the two functions every edit repeats hundreds of times, compiled once per model.

On a GPU the edit's steps are launch-bound (docs/performance.md): one training step is ~2,500 kernel launches for
~24 ms of GPU work. ``torch.compile(mode="reduce-overhead")`` fuses them and replays each step as a CUDA graph,
which needs every step to be one graph (no graph break) and its shapes to repeat. So:

- the training step's network part (noising, forward, loss; AOTAutograd compiles its backward alongside) is one
  graph. The noise draw stays outside it, eager on the step's generator (a graph cannot take a ``torch.Generator``
  argument; the draw is two kernels). The optimiser step is *not* compiled: on CUDA it is already one fused kernel
  for every tensor (``fused=True``) with ``capturable=True`` (its step counters live on the GPU, so a step never
  reads one back); on a CPU, compiling Adam over SA3 small's 200 LoRA tensors took 506 s once to save 15 ms a step
  (43 → 29 ms, against seconds per training step there; docs/performance.md);
- the sampling step (the classifier-free-guidance batch through the network and the guidance mix) is one graph
  with a *dynamic* batch dimension, so 2, 5 or 16 η (and SDEdit, zeta and inversion batches) reuse one compiled
  graph instead of one per shape (dynamo's per-function limit is 8 shapes, after which it silently runs eager).
  Batches are padded to at least 2 rows: dynamo specialises sizes 0 and 1.

Every family's steps are checked (tests/test_graphs.py, on the CPU): the AudioLDM family's UNet and SA3's DiT (stage
1, stage 2 with LoRA and several draws, sampling with and without guidance, SDEdit and FlowEdit with growing
batches) each compile to one graph without breaks, another η count compiles nothing new, and compiled = eager.

Nothing here is CUDA-only in its logic: ``enable(model, backend=...)`` compiles the same callables with any
backend, which is how the tests count graph breaks and recompiles on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from engine.models.base import AudioModel, Conditioning

MIN_DYNAMIC_BATCH = 2  # dynamo specialises dims of size 0 and 1; pad to this so every batch shares one graph


def enable(model: AudioModel, *, mode: str | None = None, backend: Any = "inductor") -> None:
    """Compile this model's steps on first use: ``mode="reduce-overhead"`` captures CUDA graphs on a GPU."""
    model._aiedit_compile = {"mode": mode, "backend": backend}  # type: ignore[attr-defined]
    model._aiedit_graphs = {}  # type: ignore[attr-defined]


def enabled(model: AudioModel) -> bool:
    return getattr(model, "_aiedit_compile", None) is not None


def default_mode(device: torch.device | str) -> str | None:
    """CUDA graphs on a GPU (the launch overhead is what they remove); plain inductor elsewhere."""
    return "reduce-overhead" if torch.device(device).type == "cuda" else None


def compiled(model: AudioModel, name: str, fn: Callable) -> Callable:
    """``fn`` compiled for ``model`` (cached per model and name), or ``fn`` itself when compiling is off."""
    opts = getattr(model, "_aiedit_compile", None)
    if opts is None:
        return fn
    cache: dict[str, Callable] = model._aiedit_graphs  # type: ignore[attr-defined]
    if name not in cache:
        kw: dict[str, Any] = {"backend": opts["backend"]}
        if opts["mode"] is not None:
            kw["mode"] = opts["mode"]
        cache[name] = torch.compile(fn, **kw)
    return cache[name]


def step_begin(model: AudioModel) -> None:
    """Tell CUDA-graph trees a new training iteration starts (its previous outputs may be overwritten)."""
    if enabled(model) and model._aiedit_compile["mode"] == "reduce-overhead":  # type: ignore[attr-defined]
        torch.compiler.cudagraph_mark_step_begin()


def mark_batch_dynamic(x: torch.Tensor, cond: Conditioning | None = None) -> None:
    """Mark dim 0 of the step's inputs dynamic (only while compiling is on: eager ignores it anyway)."""
    torch._dynamo.maybe_mark_dynamic(x, 0)
    if cond is not None:
        for v in (*cond.tensors.values(), *cond.masks.values()):
            torch._dynamo.maybe_mark_dynamic(v, 0)


def pad_batch(x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> tuple[torch.Tensor, torch.Tensor,
                                                                                  Conditioning, int]:
    """Repeat the last row up to :data:`MIN_DYNAMIC_BATCH` rows; returns the inputs (contiguous: dynamo guards on
    strides, and a latent straight from SA3's codec is a transposed view, an SDEdit timestep an expanded scalar) and
    the real row count. (Slices and ``cat`` only: an index tensor built on the host would be a copy, and a sync,
    per step.)"""
    n = x.shape[0]
    if n >= MIN_DYNAMIC_BATCH:
        return x.contiguous(), t.contiguous(), cond, n

    def pad(v: torch.Tensor) -> torch.Tensor:
        return torch.cat([v, v[-1:].expand(MIN_DYNAMIC_BATCH - n, *v.shape[1:])])
    return pad(x), pad(t), Conditioning({k: pad(v) for k, v in cond.tensors.items()},
                                        {k: pad(v) for k, v in cond.masks.items()}), n


def scalar(model: AudioModel, value: float, like: torch.Tensor) -> torch.Tensor:
    """A 0-d tensor of ``value`` on the model's device, made once (a graph input instead of a constant that
    would be specialised on; made per step it would be a host copy, and a sync, per step)."""
    cache: dict = model.__dict__.setdefault("_aiedit_scalars", {})
    key = (value, like.dtype, like.device)
    if key not in cache:
        cache[key] = torch.tensor(value, dtype=like.dtype, device=like.device)
    return cache[key]
