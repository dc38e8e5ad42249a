"""Shared test setup: offline hub, small thread count, and a few audio helpers."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The developer's own ~/.aiedit/config.toml must not change what the tests run (tests that need one make one).
os.environ["AIEDIT_CONFIG"] = str(Path(__file__).resolve().parent / "no-such-config.toml")
# Nor may converted Stable Audio 3 folders in the developer's ~/.cache/aiedit/models (tests that need one make one).
os.environ["AIEDIT_MODELS_HOME"] = str(Path(__file__).resolve().parent / "no-such-models")
# Tiny models gain nothing from intra-op threads, and OpenMP's spinning threads collapse throughput when the
# daemon subprocess and pytest compete for 2 cores (measured 50x slower). Subprocesses inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import soundfile as sf


def write_clip(path: Path, seconds: float = 2.0, sr: int = 48000, channels: int = 2,
               subtype: str = "PCM_24", seed: int = 0) -> np.ndarray:
    """A deterministic test clip (tone bursts over soft noise); returns what was written as read back."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    bursts = 0.4 * np.sin(2 * np.pi * 523.25 * t) * ((t % 0.5) < 0.12)
    cols = [bursts * (1 - 0.3 * c) + 0.02 * rng.standard_normal(t.size) for c in range(channels)]
    sf.write(str(path), np.stack(cols, axis=1), sr, subtype=subtype)
    data, _ = sf.read(str(path), dtype="float64", always_2d=True)
    return data


@pytest.fixture(scope="session")
def tiny_model():
    from engine.models.audioldm import tiny_audioldm

    return tiny_audioldm()
