"""Which device an edit runs on: ``auto`` = a CUDA GPU, else an Apple GPU (MPS), else the CPU; a named device that
is not here fails in one line before anything loads.

Apple Silicon (``mps``):
- weights stay fp32 there (``engine.precision``: ``auto`` is bf16 only on a CUDA GPU that supports it). diffusers'
  Stable Audio 3 docs warn that fp16 on MPS produces noise; bf16 on Apple GPUs was not measured by us (no Mac here),
  so fp32 it is until a measurement says otherwise. An explicit ``--precision bf16`` is still honoured.
- operations the MPS backend lacks run on the CPU instead of failing: PyTorch's own per-operator fallback, enabled
  by ``PYTORCH_ENABLE_MPS_FALLBACK=1``, which PyTorch reads once when it is imported (its MPS fallback kernel is
  registered at load). ``engine/__init__.py`` sets it on macOS before any engine module imports torch, so the CLI,
  the daemon and its workers all have it. Chosen over catching ``NotImplementedError``: the fallback moves one
  operation's tensors to the CPU and back, while a caught error could only restart the whole edit on the CPU
  (minutes lost, every call site wrapped). PyTorch warns once per missing operator; we say it once, when the device
  is chosen, and silence PyTorch's per-operator repeats.
- what was run on Apple hardware: nothing (no Mac was available); the device choice, the dtype rule and the
  messages are unit-tested with the availability probes faked (tests/test_devices.py).

The probes (:func:`cuda_available`, :func:`mps_available`) are the only places that ask torch, so tests replace them.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from engine.errors import InputError

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
FALLBACK_ENV = "PYTORCH_ENABLE_MPS_FALLBACK"
_log = logging.getLogger("aiedit.engine")
_warned = False


def enable_mps_fallback() -> None:
    """Set ``PYTORCH_ENABLE_MPS_FALLBACK=1`` unless the user set it (macOS only; it must precede ``import torch``)."""
    if sys.platform == "darwin":
        os.environ.setdefault(FALLBACK_ENV, "1")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def mps_built() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_built())


def resolve_device(spec: str | None) -> str:
    """``None``/``auto`` → the best device here; a named one is checked (``InputError``, one line, if absent)."""
    name = (spec or "auto").strip().lower()
    if name == "auto":
        if cuda_available():
            return "cuda"
        if mps_available():
            _mps_chosen()
            return "mps"
        return "cpu"
    if name == "cpu":
        return "cpu"
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not cuda_available():
            raise InputError(f"--device {name}: no CUDA GPU is visible here (torch sees none); use --device cpu, or "
                             "auto to take whatever is here")
        return name
    if name == "mps":
        if not mps_available():
            why = ("this torch was built without it" if not mps_built() else
                   "it needs an Apple Silicon Mac with macOS 12.3 or later")
            raise InputError(f"--device mps: no Apple GPU (Metal/MPS) here — {why}; use --device cpu, or auto")
        _mps_chosen()
        return "mps"
    raise InputError(f"--device {spec!r}: use auto, cpu, cuda, cuda:N or mps")


def mps_fallback_active() -> bool:
    return os.environ.get(FALLBACK_ENV, "0").strip() not in ("", "0")


def _mps_chosen() -> None:
    """One warning for the whole run: what the Apple GPU does with operations it lacks."""
    global _warned
    if _warned:
        return
    _warned = True
    if mps_fallback_active():
        warnings.filterwarnings("ignore", message=r".*will fall back to run on the CPU.*")
        _log.warning("device mps (Apple GPU): weights in fp32; operations MPS lacks run on the CPU "
                     "(%s=1), which is slower but gives the same takes", FALLBACK_ENV)
    else:
        _log.warning("device mps (Apple GPU): %s is not set, so an operation MPS lacks stops the edit; set it to 1 "
                     "before starting aiedit (aiedit sets it itself when torch is not yet loaded)", FALLBACK_ENV)
