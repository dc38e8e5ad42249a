"""The mel front-end the AudioLDM family was trained on: geometry, frequency mapping, log floor."""

from __future__ import annotations

import numpy as np
import torch

from engine.mel import MelConfig, _mel_basis, wav_to_logmel


def test_frames_channels_and_silence_floor():
    cfg = MelConfig()
    mel = wav_to_logmel(torch.zeros(2, 16000), cfg)
    assert mel.shape == (2, 100, 64)  # 1 s at hop 160 → 100 frames, 64 mel bins
    assert torch.allclose(mel, torch.full_like(mel, float(np.log(1e-5))))
    assert wav_to_logmel(torch.zeros(1, 16000), cfg, frames=128).shape == (1, 128, 64)


def test_a_tone_lands_in_the_mel_bin_whose_filter_peaks_at_its_frequency():
    cfg = MelConfig()
    fb = _mel_basis(cfg).numpy()  # (64, 513)
    freqs = np.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    for hz in (250.0, 1000.0, 4000.0):
        t = torch.arange(16000) / 16000
        mel = wav_to_logmel((0.5 * torch.sin(2 * torch.pi * hz * t))[None], cfg)
        loudest = int(mel[0, 10:90].mean(0).argmax())
        expected = int(fb[:, int(np.argmin(np.abs(freqs - hz)))].argmax())
        assert abs(loudest - expected) <= 1, (hz, loudest, expected)
    assert fb[:, freqs > cfg.fmax + 1].sum() == 0  # nothing above 8 kHz, as the models were trained
