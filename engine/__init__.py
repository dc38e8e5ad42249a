"""aiedit's engine: Imagic-style text-prompted editing of audio latent diffusion models (pure computation).

The public interface, all a caller (CLI, daemon) needs:

    editor = engine.load_editor("tiny")                  # heavy: imports torch, loads weights
    result = editor.edit(EditRequest(...), progress=fn, cancel=token)

Light names (parameters, errors, progress types, audio I/O) import without torch; the heavy ones load lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.devices import enable_mps_fallback
from engine.errors import Cancelled, EngineError, InputError, ModelUnavailable, OutOfMemory
from engine.params import EditParams, EditRequest, Inpaint, Region
from engine.progress import CancelToken, Progress

# Before any engine module imports torch (none of the above does): PyTorch reads it once, at import (engine/devices.py).
enable_mps_fallback()

if TYPE_CHECKING:
    from engine.editor import Editor, load_editor
    from engine.result import EditResult, Scores, Take

__all__ = [
    "CancelToken", "Cancelled", "EditParams", "EditRequest", "EditResult", "Editor", "EngineError", "Inpaint",
    "InputError", "ModelUnavailable", "OutOfMemory", "Progress", "Region", "Scores", "Take", "load_editor",
]

_LAZY = {"Editor": "engine.editor", "load_editor": "engine.editor", "EditResult": "engine.result",
         "Scores": "engine.result", "Take": "engine.result"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
