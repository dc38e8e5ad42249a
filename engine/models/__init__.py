"""Model adapters: one small interface (:class:`AudioModel`) over AudioLDM, AudioLDM 2, TANGO, Stable Audio 3 and
tiny models.

The names and facts (engine/models/catalog.py) import without torch, so the daemon can tell what a model spec
means and which modes it runs before loading anything; the adapters load lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.models.base import AudioModel, Conditioning

__all__ = ["AudioModel", "Conditioning"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from engine.models import base

        return getattr(base, name)
    raise AttributeError(f"module 'engine.models' has no attribute {name!r}")
