"""The log-mel front-end the AudioLDM family was trained on.

AudioLDM, AudioLDM 2 and TANGO all use the Tacotron-style STFT of the original AudioLDM code: 16 kHz, n_fft 1024,
hop 160, Hann window 1024, reflect padding, magnitude (not power) mel with Slaney-normalised filters from 0 to
8 kHz, then log(clamp(x, 1e-5)). The VAE must see exactly this, or it encodes garbage.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 160
    win_length: int = 1024
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float = 8000.0


@lru_cache(maxsize=8)
def _mel_basis(cfg: MelConfig) -> torch.Tensor:
    from transformers.audio_utils import mel_filter_bank

    fb = mel_filter_bank(num_frequency_bins=cfg.n_fft // 2 + 1, num_mel_filters=cfg.n_mels,
                         min_frequency=cfg.fmin, max_frequency=cfg.fmax, sampling_rate=cfg.sample_rate,
                         norm="slaney", mel_scale="slaney")
    return torch.from_numpy(np.ascontiguousarray(fb.T, dtype=np.float32))  # (n_mels, bins)


def wav_to_logmel(wave: torch.Tensor, cfg: MelConfig, frames: int | None = None) -> torch.Tensor:
    """(B, N) waveform in [-1, 1] → (B, T, n_mels) log-mel with T = ``frames`` or ceil(N / hop).

    The waveform is zero-padded to whole frames and the trailing centre frame dropped, so a clip of
    ``frames × hop`` samples maps to exactly ``frames`` mel frames.
    """
    if frames is None:
        frames = -(-wave.shape[-1] // cfg.hop_length)
    need = frames * cfg.hop_length
    if wave.shape[-1] < need:
        wave = torch.nn.functional.pad(wave, (0, need - wave.shape[-1]))
    wave = wave[..., :need]
    window = torch.hann_window(cfg.win_length, device=wave.device, dtype=wave.dtype)
    spec = torch.stft(wave, cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length, window=window,
                      center=True, pad_mode="reflect", return_complex=True)
    mag = spec.abs()  # (B, bins, T+1)
    mel = _mel_basis(cfg).to(mag.device, mag.dtype) @ mag
    logmel = torch.log(torch.clamp(mel, min=1e-5))
    return logmel[..., :frames].transpose(1, 2).contiguous()
