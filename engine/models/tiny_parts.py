"""Small random-weight components of the real classes, built offline in-process (tests, demo, benchmarks).

Geometry matches the AudioLDM family (16 kHz, hop 160, 64 mels, VAE ↓4 with 8 latent channels), so every code
path (mel front-end, latent shapes, vocoder hop) is the one real models take; only the widths are small.
"""

from __future__ import annotations

import math

import torch


def byte_roberta_tokenizer(model_max_length: int = 77):
    """A byte-level RobertaTokenizer with one token per byte, no files: ids 0-2 = <s>, <pad>, </s>."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    for sym in sorted(ByteLevel.alphabet()):
        vocab.setdefault(sym, len(vocab))
    return RobertaTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)

def tiny_vae(seed: int = 0):
    """AutoencoderKL on (B, 1, T, 64) log-mels, 8 latent channels, ↓4; scaling factor calibrated to unit std."""
    from diffusers import AutoencoderKL

    from engine.mel import MelConfig, wav_to_logmel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(in_channels=1, out_channels=1, latent_channels=8, norm_num_groups=8,
                            block_out_channels=(16, 16, 32), layers_per_block=1,
                            down_block_types=("DownEncoderBlock2D",) * 3,
                            up_block_types=("UpDecoderBlock2D",) * 3)
    vae.eval()
    # A random VAE's latents are tiny (std ≈ 0.03); set scaling_factor so the diffusion sees unit variance.
    t = torch.arange(16000 * 2) / 16000
    probe = 0.3 * torch.sin(2 * math.pi * 440 * t) * (1 + torch.sin(2 * math.pi * 3 * t)) / 2
    with torch.no_grad():
        mel = wav_to_logmel(probe[None], MelConfig(), frames=192).unsqueeze(1)
        std = vae.encode(mel).latent_dist.mode().std().item()
    vae.register_to_config(scaling_factor=1.0 / max(std, 1e-6))
    return vae

def tiny_vocoder(seed: int = 0):
    """SpeechT5HifiGan with the real hop (5·4·2·2·2 = 160); a larger init range keeps its output audible."""
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    cfg = SpeechT5HifiGanConfig(model_in_dim=64, sampling_rate=16000, upsample_initial_channel=32,
                                upsample_rates=[5, 4, 2, 2, 2], upsample_kernel_sizes=[10, 8, 4, 4, 4],
                                resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
                                normalize_before=False, initializer_range=0.5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        voc = SpeechT5HifiGan(cfg)
    return voc.eval()

# cvssp/audioldm* (and audioldm2) scheduler/scheduler_config.json: ε-prediction, scaled-linear betas 0.0015 → 0.0195
# (the latent-diffusion defaults linear_start/linear_end), so ᾱ(999) = 1.4e-4. Stable Diffusion's 0.00085 → 0.012,
# which TANGO and the toy model use, ends at ᾱ(999) = 4.7e-3.
AUDIOLDM_SCHEDULER_CONFIG: dict = {"num_train_timesteps": 1000, "beta_start": 0.0015, "beta_end": 0.0195,
                                   "beta_schedule": "scaled_linear", "clip_sample": False, "set_alpha_to_one": False,
                                   "steps_offset": 1, "prediction_type": "epsilon"}


def tiny_ddim_config() -> dict:
    """The AudioLDM family's training schedule (:data:`AUDIOLDM_SCHEDULER_CONFIG`), for the tiny models."""
    return dict(AUDIOLDM_SCHEDULER_CONFIG)
