"""How far a take is from a reference clip, in the engine's own log-mel (the scale the model sees)."""

from __future__ import annotations

import numpy as np
import torch

from engine.mel import MelConfig, wav_to_logmel

FLOOR = -6.9  # log(1e-3): ≈ 60 dB below a full-scale bin


def logmel_l1(a: np.ndarray, b: np.ndarray, floor: float = FLOOR) -> float:
    """Mean |log-mel difference| of two mono 16 kHz clips, both floored so that digital silence against a faint
    noise floor does not dominate."""
    ma = wav_to_logmel(torch.from_numpy(a.astype(np.float32))[None], MelConfig()).clamp(min=floor)
    mb = wav_to_logmel(torch.from_numpy(b.astype(np.float32))[None], MelConfig()).clamp(min=floor)
    return float((ma - mb).abs().mean())
