"""What an edit returns: one take per η, aligned with the input, with its scores."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Scores:
    """CLAP cosine similarities (paper §3.2): take vs prompt, take vs input, and their sum."""

    text: float
    audio: float

    @property
    def sum(self) -> float:
        return self.text + self.audio

    def to_dict(self) -> dict[str, float | None]:
        """Rounded; a non-finite score (CLAP on extreme audio can give NaN) is ``None``: JSON cannot hold NaN."""
        return {"text": _finite(self.text), "audio": _finite(self.audio), "sum": _finite(self.sum)}


@dataclass
class Take:
    eta: float
    audio: np.ndarray  # (frames, channels) float32 at the input's sample rate, same length as the input region
    scores: Scores | None = None


@dataclass
class EditResult:
    takes: list[Take]
    sample_rate: int
    channels: int
    frames: int
    best: int | None = None  # index of the take with the highest score sum
    cache_hit: bool = False  # stages 1-2 came from the cache
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    windows: int = 1
    params: dict[str, Any] = field(default_factory=dict)  # the parameters used, model defaults filled in
    # sequential denoiser calls per stage that ran (engine.calls): embedding, finetune, inverting, sampling
    network_calls: dict[str, int] = field(default_factory=dict)
    # one line each on what the edit left out or should be known ("bpm ignored: toy does not take musical context")
    notes: list[str] = field(default_factory=list)

    def pick_best(self) -> None:
        scored = [(t.scores.sum, i) for i, t in enumerate(self.takes)
                  if t.scores is not None and math.isfinite(t.scores.sum)]
        self.best = max(scored)[1] if scored else None


def _finite(x: float) -> float | None:
    return round(x, 6) if math.isfinite(x) else None
