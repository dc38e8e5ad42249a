"""Model adapters: one small interface (:class:`AudioModel`) over AudioLDM, AudioLDM 2, TANGO and tiny models."""

from engine.models.base import AudioModel, Conditioning

__all__ = ["AudioModel", "Conditioning"]
