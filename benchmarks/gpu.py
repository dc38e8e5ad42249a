"""Real-size speed: each model family built at its published size with random weights, timed through the engine.

    python -m benchmarks gpu --model tango|audioldm|audioldm-l|audioldm2|sa3-small|sa3-medium|ace-step
                             [--device cuda|cpu] [--json PATH] [--smoke]
                             [--rows steps,lora,retake,sdedit,flowedit,repaint,cover,full]

No weights exist on the benchmark machines and none are downloaded: speed does not depend on the weights' values,
so every component is built in-process from the configs below (sources named at each). ``--smoke`` swaps in the
tiny test models and a few steps so CI keeps this file alive on a CPU in seconds.

Rows: per-step cost of stage 1, stage 2 (LoRA and full) and one classifier-free-guidance sampling step for all η in
one batch; then whole ``Editor.edit`` runs — a cold LoRA edit (5 η), a re-take from the stage cache (2 η), an
SDEdit preview (2 strengths), a FlowEdit preview (2 strengths; flow models only) and a cold full fine-tune edit
(5 η) — each with its per-stage split, peak GPU memory, peak host RSS and the engine's count of sequential network
calls per stage (one batched call is one; on a GPU that count, not the batch, sets the floor of an edit's time).
Every row is appended to ``--json`` as soon as it is measured, so a run killed at a time limit keeps what it
finished.

Stable Audio 3 (``sa3-small``, ``sa3-medium``) is built from diffusers' ``StableAudio3DiTModel`` / ``AutoencoderSAME``
and transformers' ``T5GemmaEncoderModel`` at the published sizes (sources at ``SA3_DIT``), wrapped in the
``stable-audio-3`` adapter, and edited with its own defaults (8-step ping-pong sampling, guidance off).

ACE-Step 1.5 (``ace-step``) is the turbo checkpoint at its real size: diffusers' ``AceStepTransformer1DModel``,
``AceStepConditionEncoder``, the 5 Hz audio tokenizer and detokenizer, ``AutoencoderOobleck`` and transformers'
``Qwen3Model`` built from the configs at ``ACE_TURBO`` (sources there), behind the ``ace-step`` adapter with its own
defaults (8 Euler steps, guidance off); it adds a **repaint** row (the middle third of the clip, 2 strengths) and a
**cover** row (2 cover strengths).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from engine.models.base import AudioModel
from engine.models.tiny_parts import AUDIOLDM_SCHEDULER_CONFIG

# -- published configs ------------------------------------------------------------------------------------------

# google/flan-t5-large config.json, encoder half (TANGO's and AudioLDM 2's second text encoder).
FLAN_T5_LARGE = {"vocab_size": 32128, "d_model": 1024, "d_ff": 2816, "d_kv": 64, "num_heads": 16, "num_layers": 24,
                 "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}
# The original AudioLDM VAE (TANGO's vae_config.json ddconfig; AudioLDM/AudioLDM 2 vae/config.json: 128·[1,2,4], z 8).
AUDIOLDM_VAE_DDCONFIG = {"ch": 128, "ch_mult": [1, 2, 4], "z_channels": 8, "num_res_blocks": 2, "in_channels": 1,
                         "out_ch": 1, "attn_resolutions": []}


def _audioldm_unet(base: int, head_dim: int) -> dict:
    """cvssp/audioldm-{s-full-v2,m-full,l-full} unet/config.json: channels base·[1,2,3,5], attention in the three
    lower blocks, cross-attention dims = block widths (no context), CLAP's 512-d vector as a concatenated class
    embedding. The model cards give UNet widths 128 (s), 192 (m), 256 (l); l doubles s's head channels too."""
    chans = [base * m for m in (1, 2, 3, 5)]
    return {"sample_size": 128, "in_channels": 8, "out_channels": 8, "block_out_channels": chans,
            "layers_per_block": 2, "attention_head_dim": head_dim, "cross_attention_dim": chans,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            "class_embed_type": "simple_projection", "projection_class_embeddings_input_dim": 512,
            "class_embeddings_concat": True}


AUDIOLDM_S_UNET = _audioldm_unet(128, 8)
AUDIOLDM_L_UNET = _audioldm_unet(256, 16)
# cvssp/audioldm2 unet/config.json (AudioLDM2UNet2DConditionModel): GPT-2 (768) and FLAN-T5 (1024) cross-attention.
AUDIOLDM2_UNET = {
    "sample_size": 256, "in_channels": 8, "out_channels": 8, "block_out_channels": [128, 256, 384, 640],
    "layers_per_block": 2, "attention_head_dim": 8, "transformer_layers_per_block": 1,
    "cross_attention_dim": [[None, 768, 1024]] * 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]}
AUDIOLDM_SCHEDULER = AUDIOLDM_SCHEDULER_CONFIG  # cvssp/audioldm* scheduler/scheduler_config.json

# Stable Audio 3's DiTs (StableAudio3DiTModel kwargs). Sources: the Stability-AI/stable-audio-3 repository's MLX
# ports, optimized/mlx/models/defs/dit_mlx.py (small: embed 1024, depth 20, 16 heads of 64, FF inner 4096, *plain*
# attention) and dit_mlx_medium.py (medium: embed 1536, depth 24, 24 heads, FF inner 6144, differential attention);
# both: 256 latent channels, T5Gemma's 768-d context and global input, 257-channel inpainting input (mask + latent),
# 64 memory tokens, 256 Fourier time features. Sizes: docs/guides/model-overview.md of that repository (DiT small
# 433 M, medium 1.4 B). The small sfx and music checkpoints share one architecture.
_SA3_DIT_COMMON = {"io_channels": 256, "patch_size": 1, "cond_token_dim": 768, "global_cond_dim": 768,
                   "local_add_cond_dim": 257, "timestep_features_dim": 256, "ff_mult": 4.0, "num_memory_tokens": 64}
SA3_DIT = {"sa3-small": {**_SA3_DIT_COMMON, "embed_dim": 1024, "depth": 20, "num_heads": 16,
                         "use_differential_attention": False},
           "sa3-medium": {**_SA3_DIT_COMMON, "embed_dim": 1536, "depth": 24, "num_heads": 24,
                          "use_differential_attention": True}}
# SAME autoencoders (AutoencoderSAME kwargs): diffusers' class docstring — SAME-S is the default configuration
# (stabilityai/SAME-S, 108 M, small models), SAME-L sets encoder_channels 256, depth 12 and 8 sinusoidal decoder
# layers (stabilityai/SAME-L, 852 M, medium). Both ↓4096 to 256-d latents of 44.1 kHz stereo.
SA3_SAME = {"sa3-small": {}, "sa3-medium": {"encoder_channels": 256, "encoder_transformer_depths": (12,),
                                            "decoder_sinusoidal_blocks": (8,)}}
# google/t5gemma-b-b-ul2, the encoder SA3 conditions on (diffusers' SA3 pipeline docstring): hidden 768, 12 layers,
# 12 heads (no GQA) of 64, FF 2048, vocabulary 256,000 — the encoder config as the SA3 repository's ports read it
# (the encoder is ≈ 0.3 B with its embedding table).
T5GEMMA_B_ENCODER = {"vocab_size": 256000, "hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12,
                     "num_attention_heads": 12, "num_key_value_heads": 12, "head_dim": 64,
                     "query_pre_attn_scalar": 64, "attn_logit_softcapping": 50.0}

# ACE-Step 1.5 turbo (acestep-v15-turbo/config.json of ACE-Step/Ace-Step1.5, the keys diffusers'
# scripts/convert_ace_step_to_diffusers.py reads): the DiT is 24 blocks of 2048 (16 query heads, 8 KV heads of 128,
# SwiGLU 6144, sliding window 128 on every other block), patch 2 over 192 input channels (64 latent + 64 source +
# 64 chunk mask); the condition encoder has 8 lyric and 4 timbre layers at the same width over Qwen3's 1024-d
# states; the audio tokenizer pools 5 frames with 2 layers into FSQ levels 8,8,8,5,5,5. These are diffusers' class
# defaults for AceStepTransformer1DModel / AceStepConditionEncoder / AceStepAudioTokenizer, documented as the 2B
# turbo's; the XL models set encoder_* keys, the 2B ones do not.
ACE_TURBO = {"hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 24, "num_attention_heads": 16,
             "num_key_value_heads": 8, "head_dim": 128, "in_channels": 192, "audio_acoustic_hidden_dim": 64,
             "patch_size": 2, "rope_theta": 1000000.0, "attention_bias": False, "attention_dropout": 0.0,
             "rms_norm_eps": 1e-6, "sliding_window": 128, "layer_types": None, "text_hidden_dim": 1024,
             "timbre_hidden_dim": 64, "num_lyric_encoder_hidden_layers": 8, "num_timbre_encoder_hidden_layers": 4,
             "pool_window_size": 5, "num_attention_pooler_hidden_layers": 2, "fsq_dim": 2048,
             "fsq_input_levels": [8, 8, 8, 5, 5, 5], "fsq_input_num_quantizers": 1, "is_turbo": True,
             "model_version": "turbo"}
# ACE-Step/Ace-Step1.5 vae/config.json: Stable Audio's Oobleck at 48 kHz, ↓2·4·4·6·10 = 1920 (25 Hz), 64-d latents.
ACE_VAE = {"encoder_hidden_size": 128, "downsampling_ratios": [2, 4, 4, 6, 10], "channel_multiples": [1, 2, 4, 8, 16],
           "decoder_channels": 128, "decoder_input_channels": 64, "audio_channels": 2, "sampling_rate": 48000}
# Qwen/Qwen3-Embedding-0.6B config.json (Qwen3-0.6B's backbone, 151,669-token vocabulary).
QWEN3_EMBEDDING_06B = {"vocab_size": 151669, "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
                       "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
                       "max_position_embeddings": 32768, "rope_theta": 1000000, "tie_word_embeddings": True}

# Published sizes (millions of parameters) the built models are checked against: TANGO's UNet (its paper and
# notes/gpu.md), AudioLDM's UNets (the AudioLDM paper: S 181 M, L 739 M) and whole pipelines (the cvssp/audioldm-*
# model cards: s 421 M, l 975 M), AudioLDM 2's UNet and pipeline (diffusers' AudioLDM 2 docs: 350 M, 1.1 B), SA3's
# DiTs (above). For SA3 the "unet" entry is the denoiser, the DiT. For ACE-Step it is what the DiT checkpoint holds
# (DiT, condition encoder, 5 Hz audio tokenizer and detokenizer): acestep-v15-turbo/model.safetensors is ≈ 4.7 GB of
# bf16 (the ACE-Step-1.5 model downloader's listing, "DiT ~4.7 GB") = ≈ 2,350 M, the README's "2B" DiT; its VAE file
# is 337,431,388 bytes of bf16 (ACE-Step/Ace-Step1.5 vae/diffusion_pytorch_model.safetensors) = 168.7 M.
PUBLISHED_UNET_M = {"tango": 865.9, "audioldm": 181.0, "audioldm-l": 739.0, "audioldm2": 350.0,
                    "sa3-small": 433.0, "sa3-medium": 1400.0, "ace-step": 2350.0}
PUBLISHED_TOTAL_M = {"audioldm": 421.0, "audioldm-l": 975.0, "audioldm2": 1100.0}
PUBLISHED_VAE_M = {"sa3-small": 108.0, "sa3-medium": 852.0, "ace-step": 168.7}
FAMILIES = tuple(PUBLISHED_UNET_M)
SA3_FAMILIES = tuple(SA3_DIT)


def unet_config(family: str) -> tuple[type, dict]:
    """The denoiser's class and config: a UNet, or SA3's DiT."""
    from diffusers import AudioLDM2UNet2DConditionModel, StableAudio3DiTModel, UNet2DConditionModel

    from engine.models.tango import TANGO_UNET_CONFIG

    if family in SA3_DIT:
        return StableAudio3DiTModel, SA3_DIT[family]
    if family == "ace-step":
        from diffusers import AceStepTransformer1DModel

        from engine.models.ace_step import component_configs

        return AceStepTransformer1DModel, component_configs(ACE_TURBO)["transformer"]
    return {"tango": (UNet2DConditionModel, TANGO_UNET_CONFIG), "audioldm": (UNet2DConditionModel, AUDIOLDM_S_UNET),
            "audioldm-l": (UNet2DConditionModel, AUDIOLDM_L_UNET),
            "audioldm2": (AudioLDM2UNet2DConditionModel, AUDIOLDM2_UNET)}[family]


def count_unet_params(family: str) -> int:
    """Parameters of the family's real-size UNet, built on the meta device (no memory, milliseconds)."""
    cls, cfg = unet_config(family)
    with torch.device("meta"):
        unet = cls.from_config(cfg)
    return sum(p.numel() for p in unet.parameters())


def build_real(family: str, device: str) -> AudioModel:
    """The family at its real size with random weights, initialised directly on ``device`` (fast on a GPU)."""
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import ByT5Tokenizer, SpeechT5HifiGan, SpeechT5HifiGanConfig, T5Config, T5EncoderModel

    from engine.models.convert_original import HIFIGAN_16K_64, vae_config_from_ddconfig
    from engine.models.tiny_parts import byte_roberta_tokenizer

    torch.manual_seed(0)
    if family in SA3_FAMILIES:
        return build_sa3(family, device)
    if family == "ace-step":
        return build_ace(device)
    cls, cfg = unet_config(family)
    with torch.device(device):
        unet = cls.from_config(cfg)
        # Scaling factor ≈ the published checkpoints' (≈ 0.9–1.0 for these VAEs); speed does not depend on it.
        vae = AutoencoderKL(**vae_config_from_ddconfig(AUDIOLDM_VAE_DDCONFIG, 1.0))
        vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(**HIFIGAN_16K_64))
        if family == "tango":
            from engine.models.tango import SD21_SCHEDULER_CONFIG, Tango

            # Tokenizer files cannot be downloaded here: ByT5's byte tokenizer (no files) stands in for FLAN-T5's
            # SentencePiece; a prompt becomes ~3× more tokens, which only lengthens the cross-attention context.
            tok = ByT5Tokenizer(model_max_length=512)
            t5 = T5EncoderModel(T5Config(**FLAN_T5_LARGE))
            model: AudioModel = Tango(name="tango-real", unet=unet, vae=vae, vocoder=vocoder, text_encoder=t5,
                                      tokenizer=tok, scheduler=DDIMScheduler(**SD21_SCHEDULER_CONFIG))
        elif family in ("audioldm", "audioldm-l"):
            from transformers import ClapTextConfig, ClapTextModelWithProjection

            from engine.models.audioldm import AudioLDM

            # CLAP text tower of cvssp/audioldm-*: RoBERTa-base (transformers' ClapTextConfig defaults), 512-d proj.
            text = ClapTextModelWithProjection(ClapTextConfig(projection_dim=512))
            model = AudioLDM(name=f"{family}-real", unet=unet, vae=vae, vocoder=vocoder, text_encoder=text,
                             tokenizer=byte_roberta_tokenizer(), scheduler=DDIMScheduler(**AUDIOLDM_SCHEDULER))
        else:
            from diffusers import AudioLDM2ProjectionModel
            from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, GPT2Config, GPT2Model

            from engine.models.audioldm2 import AudioLDM2

            # cvssp/audioldm2: CLAP (HTSAT audio + RoBERTa text, 512-d), FLAN-T5-large, GPT-2 base, projection.
            clap = ClapModel(ClapConfig(projection_dim=512))
            model = AudioLDM2(
                name="audioldm2-real", unet=unet, vae=vae, vocoder=vocoder, clap=clap,
                clap_tokenizer=byte_roberta_tokenizer(), clap_feature_extractor=ClapFeatureExtractor(),
                t5=T5EncoderModel(T5Config(**FLAN_T5_LARGE)), t5_tokenizer=ByT5Tokenizer(model_max_length=128),
                projection=AudioLDM2ProjectionModel(text_encoder_dim=512, text_encoder_1_dim=1024,
                                                    langauge_model_dim=768),
                language_model=GPT2Model(GPT2Config()), scheduler=DDIMScheduler(**AUDIOLDM_SCHEDULER))
    return model.to(device, torch.float32)


def build_sa3(family: str, device: str) -> AudioModel:
    """Stable Audio 3 at its real size (random weights) behind the ``stable-audio-3`` adapter, with the distilled
    checkpoints' sampler (8 ping-pong steps, guidance off: the adapter's defaults for them)."""
    from diffusers import AutoencoderSAME, FlowMatchEulerDiscreteScheduler, StableAudio3DiTModel
    from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import StableAudio3DurationEmbedder
    from transformers import T5GemmaConfig, T5GemmaEncoderModel
    from transformers.models.t5gemma.configuration_t5gemma import T5GemmaModuleConfig

    from engine.models.stable_audio3 import StableAudio3
    from engine.models.tiny_parts import offline_gemma_tokenizer, sa3_scheduler_config

    module = T5GemmaModuleConfig(**T5GEMMA_B_ENCODER).to_dict()
    with torch.device(device):
        dit = StableAudio3DiTModel.from_config(SA3_DIT[family])
        vae = AutoencoderSAME(**SA3_SAME[family])
        text = T5GemmaEncoderModel(T5GemmaConfig(encoder=module, decoder=module, is_encoder_decoder=False))
        duration = StableAudio3DurationEmbedder()  # 768-d, 0-384 s (diffusers' defaults, SA3 medium's range)
    # The real tokenizer (Gemma's 256k SentencePiece) cannot be downloaded: an in-memory Gemma tokenizer with one
    # token per character stands in; it pads to the same 256 tokens, so the context length is the real one.
    tok = offline_gemma_tokenizer(model_max_length=256)
    # The window is the product's (StableAudio3 reads it from the DiT's size: small 120 s, medium 380 s).
    model = StableAudio3(name=f"{family}-real", transformer=dit, vae=vae, text_encoder=text, tokenizer=tok,
                         duration_embedder=duration,
                         scheduler=FlowMatchEulerDiscreteScheduler(**sa3_scheduler_config(stochastic=True)))
    return model.to(device, torch.float32)


def build_ace(device: str) -> AudioModel:
    """ACE-Step 1.5 turbo at its real size (random weights) behind the ``ace-step`` adapter (8 Euler steps on the
    shift-3 grid, guidance off: the adapter's defaults for the turbo checkpoint)."""
    from diffusers import AceStepTransformer1DModel, AutoencoderOobleck, FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.ace_step import (
        AceStepAudioTokenDetokenizer,
        AceStepAudioTokenizer,
        AceStepConditionEncoder,
    )
    from transformers import Qwen3Config, Qwen3Model

    from engine.models.ace_step import AceStep, component_configs, scheduler_config
    from engine.models.tiny_parts import offline_qwen_tokenizer

    cfg = component_configs(ACE_TURBO)
    with torch.device(device):
        parts = {"transformer": AceStepTransformer1DModel(**cfg["transformer"]),
                 "condition_encoder": AceStepConditionEncoder(**cfg["condition_encoder"]),
                 "audio_tokenizer": AceStepAudioTokenizer(**cfg["audio_tokenizer"]),
                 "audio_token_detokenizer": AceStepAudioTokenDetokenizer(**cfg["audio_token_detokenizer"]),
                 "vae": AutoencoderOobleck(**ACE_VAE), "text_encoder": Qwen3Model(Qwen3Config(**QWEN3_EMBEDDING_06B))}
    # Qwen's 151k BPE vocabulary cannot be downloaded: the in-memory byte-level Qwen tokenizer stands in (a prompt
    # becomes ~4× more tokens, which only lengthens the conditioning; the ids stay inside the real vocabulary).
    model = AceStep(name="ace-step-real", tokenizer=offline_qwen_tokenizer(),
                    scheduler=FlowMatchEulerDiscreteScheduler(**scheduler_config()), **parts)
    return model.to(device, torch.float32)


def build_smoke(family: str) -> AudioModel:
    """The tiny test model of the same family (same classes and code paths, toy widths)."""
    from engine.models.ace_step import tiny_ace_step
    from engine.models.audioldm import tiny_audioldm
    from engine.models.audioldm2 import tiny_audioldm2
    from engine.models.stable_audio3 import tiny_stable_audio3
    from engine.models.tango import tiny_tango

    return {"tango": tiny_tango, "audioldm": tiny_audioldm, "audioldm-l": tiny_audioldm,
            "audioldm2": tiny_audioldm2, "sa3-small": tiny_stable_audio3, "sa3-medium": tiny_stable_audio3,
            "ace-step": tiny_ace_step}[family]()


def param_counts(model: AudioModel) -> dict[str, float]:
    return {k: sum(p.numel() for p in m.parameters()) / 1e6 for k, m in model.modules().items()}


def denoiser_as_published(model: AudioModel) -> float:
    """The denoiser's size the way its publisher counts it (millions). SA3's published DiT sizes (433 M, 1.4 B)
    leave out the per-block inpainting embedders (``to_local_embed``: 26 M small, 66 M medium): with them the built
    DiTs hold 459 M and 1,453 M, without them 432.8 M and 1,387 M. ACE-Step's is its DiT checkpoint: the DiT with
    the condition encoder and the 5 Hz audio tokenizer and detokenizer that share its file."""
    unet = model.unet
    if model.__class__.__name__ == "AceStep":
        parts = (unet, model.condition_encoder, model.audio_tokenizer, model.audio_token_detokenizer)
        return sum(p.numel() for m in parts if m is not None for p in m.parameters()) / 1e6
    local = sum(p.numel() for n, p in unet.named_parameters() if ".to_local_embed." in n)
    return (sum(p.numel() for p in unet.parameters()) - local) / 1e6


# -- measuring ---------------------------------------------------------------------------------------------------

def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mib() -> float | None:
    """Resident memory now (Linux), to tell what stays held from what only peaked."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _measure(fn: Callable[[], object]) -> tuple[float, float | None, object]:
    """(wall seconds, peak GPU MiB during the call or None, the call's result)."""
    gpu = torch.cuda.is_available()
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    _sync()
    t0 = time.perf_counter()
    out = fn()
    _sync()
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if gpu else None
    return wall, peak, out


def per_step(run: Callable[[int], object], steps: int) -> float:
    """Seconds per step of ``run(n)`` without its fixed cost: (T(1 + steps) − T(1)) / steps, after a warm-up."""
    run(1)
    t1, _, _ = _measure(lambda: run(1))
    tn, _, _ = _measure(lambda: run(1 + steps))
    return max(tn - t1, 0.0) / steps


def clip(seconds: float, sr: int = 44100) -> np.ndarray:
    """A stereo test clip: gated tone plus a little noise (the content does not affect speed)."""
    t = np.arange(int(seconds * sr)) / sr
    noise = 0.01 * np.random.default_rng(0).standard_normal(t.size)
    mono = 0.4 * np.sin(2 * np.pi * 440 * t) * ((t % 0.5) < 0.1) + noise
    return np.stack([mono, 0.8 * mono], axis=1).astype(np.float32)


class Report:
    """Rows printed as one table at the end and appended to a JSON file as they come."""

    def __init__(self, path: str | None, header: dict) -> None:
        self.path = Path(path) if path else None
        self.header = header
        self.rows: list[dict] = []
        self._flush()

    def add(self, row: dict) -> None:
        rss = _rss_mib()
        row = {**row, "peak_rss_mib": round(_peak_rss_mib(), 1), "rss_mib": round(rss, 1) if rss else None}
        self.rows.append(row)
        print(f"  {row['what']:<38} {_fmt(row)}", flush=True)
        self._flush()

    def _flush(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".partial")
        tmp.write_text(json.dumps({**self.header, "rows": self.rows}, indent=1))
        tmp.replace(self.path)

    def table(self) -> str:
        h = self.header
        lines = [f"\nreal-size benchmark — {h['model']} ({h['size']}), {h['seconds']:g} s clip, latent {h['latent']}, "
                 f"precision {h['precision']}{', compiled' if h['compile'] else ''}",
                 f"machine: {h['machine']}", f"UNet {h['unet_m']:.1f} M parameters (published {h['published_m']})",
                 "", f"| {'what':<38} | {'wall':>9} | split | network calls | peak GPU | peak RSS |",
                 f"|{'-' * 40}|{'-' * 11}|---|---|---|---|"]
        for r in self.rows:
            wall = f"{r['ms_per_step']:.1f} ms/step" if "ms_per_step" in r else f"{r['wall_s']:.2f} s"
            split = ", ".join(f"{k} {v:.2f}" for k, v in r.get("split", {}).items()) or "—"
            gpu = f"{r['peak_gpu_mib'] / 1024:.2f} GiB" if r.get("peak_gpu_mib") is not None else "—"
            lines.append(f"| {r['what']:<38} | {wall:>9} | {split} | {calls_cell(r.get('network_calls'))} | {gpu} "
                         f"| {r['peak_rss_mib'] / 1024:.2f} GiB |")
        return "\n".join(lines)


def calls_cell(calls: dict[str, int] | None) -> str:
    """``embedding 200 + finetune 375 + sampling 25 = 600`` (sequential network calls per stage), or —."""
    if not calls:
        return "—"
    return " + ".join(f"{k} {v}" for k, v in calls.items()) + f" = {sum(calls.values())}"


def _fmt(r: dict) -> str:
    if "ms_per_step" in r:
        return f"{r['ms_per_step']:.1f} ms/step"
    split = " ".join(f"{k}={v:.2f}" for k, v in r.get("split", {}).items())
    calls = f"  calls: {calls_cell(r['network_calls'])}" if r.get("network_calls") else ""
    return f"{r['wall_s']:.2f} s  [{split}]{calls}"


def machine(device: str) -> str:
    dev = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU ({os.cpu_count()} cores)"
    return f"{dev}, {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"


ROWS = ("steps", "lora", "retake", "sdedit", "flowedit", "repaint", "cover", "full")



def toy_check(device: str, precision: str, json_path: str | None, *, model: str = "toy",
              mode: str | None = None) -> dict:
    """The fast path against the fp32 path on a shipped toy model (trained weights, so takes mean something): one
    edit of a held-out toy clip through both — on ``toy`` a LoRA edit with η = 0 and 1, on ``toy-flow`` (SA3's
    classes, 44.1 kHz stereo) FlowEdit at strengths 0.6 and 0.9 unless ``mode`` says otherwise — compared by log-mel
    L1 (toyworld.distance) and by the toy CLAP's Text/Audio scores, next to the spread of two fp32 runs with
    different seeds. Also the codec alone: the same latent decoded by the fp32 codec and by a bf16 copy of it (SNR in
    dB; the codec is kept fp32 on every device since issue 25, so this says what that is worth)."""
    from engine.editor import load_editor
    from engine.params import EditParams, EditRequest, Region
    from toyworld import world
    from toyworld.distance import logmel_l1

    flow = model == "toy-flow"
    mode = mode or ("flowedit" if flow else "lora")
    etas = (0.6, 0.9) if mode in ("flowedit", "sdedit") else (0.0, 1.0)
    sr = 44100 if flow else world.SR
    held_out = world.clip(world.HELD_OUT + 7, sr=sr, stereo=flow)  # never seen in training
    wave = held_out.wave.T if held_out.wave.ndim == 2 else held_out.wave
    runs = {"fp32": ("fp32", 0), "fp32-seed1": ("fp32", 1), precision: (precision, 0)}
    takes, scores = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "toy.wav"
        sf.write(src, wave, sr)
        for label, (prec_name, seed) in runs.items():
            ed = load_editor(model, device=device, precision=prec_name)
            params = EditParams("three low beeps", etas=etas, seed=seed, mode=mode)
            res = ed.edit(EditRequest(str(src), Region(), params))
            takes[label] = [t.audio.mean(axis=1) for t in res.takes]
            scores[label] = [t.scores.to_dict() if t.scores else None for t in res.takes]
            if label == "fp32":
                codec = codec_snr(ed.model, wave)

    def l1(a: np.ndarray, b: np.ndarray) -> float:
        if sr != world.SR:
            import soxr

            a, b = (soxr.resample(x, sr, world.SR).astype(np.float32) for x in (a, b))
        return round(logmel_l1(a, b), 4)

    def dist(x: str, y: str) -> list[float]:
        return [l1(a, b) for a, b in zip(takes[x], takes[y], strict=True)]

    # The yardstick: how far two fp32 runs that differ only in their seed land from each other.
    out = {"device": device, "model": model, "mode": mode, "precision": precision, "eta": list(etas),
           "clip_seed": world.HELD_OUT + 7, "logmel_l1_fast_vs_fp32": dist(precision, "fp32"),
           "logmel_l1_fp32_seed0_vs_seed1": dist("fp32-seed1", "fp32"),
           "logmel_l1_take0_vs_take1_fp32": l1(*takes["fp32"]), "scores": scores, "codec": codec}
    print(json.dumps(out, indent=1), flush=True)
    if json_path:
        Path(json_path).write_text(json.dumps(out, indent=1))
    return out


def codec_snr(model: AudioModel, wave: np.ndarray) -> dict:
    """The clip's latent decoded by the model's own (fp32) codec and by bf16 copies of it: SNR of the bf16 decode
    and of the bf16 encode-then-decode against fp32, in dB."""
    import copy

    x = torch.from_numpy(np.ascontiguousarray(np.atleast_2d(wave.T if wave.ndim == 2 else wave), dtype=np.float32))
    n = x.shape[-1]
    padded = torch.zeros(1, model.channels, model.padded_length(n))
    padded[0, :, :n] = x[:model.channels]
    low = copy.copy(model)
    for name in model.codec_modules:
        if name in model.modules():
            setattr(low, name, torch.nn.Module.to(copy.deepcopy(getattr(model, name)), dtype=torch.bfloat16))

    def snr(ref: torch.Tensor, y: torch.Tensor) -> float:
        return round(float(10 * torch.log10(ref.pow(2).sum() / (y - ref).pow(2).sum().clamp_min(1e-20))), 2)

    with torch.no_grad():
        z = model.audio_to_latent(padded)
        ref = model.latent_to_audio(z)
        out = {"decode_bf16_snr_db": snr(ref, low.latent_to_audio(z)),
               "roundtrip_bf16_snr_db": snr(ref, low.latent_to_audio(low.audio_to_latent(padded)))}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks gpu", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=FAMILIES, default="tango")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny model, few steps (CPU CI)")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"which rows, comma-separated from {','.join(ROWS)}")
    ap.add_argument("--json", default=None, help="write the rows here (rewritten after each row)")
    ap.add_argument("--seconds", type=float, default=None, help="clip length (default 10 s; smoke 2 s)")
    ap.add_argument("--etas", type=int, default=5, help="takes of the cold edits")
    ap.add_argument("--timed-steps", type=int, default=None, help="steps timed per per-step row (default 20)")
    ap.add_argument("--embed-steps", type=int, default=None, help="stage 1 steps of the edits (default the model's)")
    ap.add_argument("--tune-steps", type=int, default=None, help="stage 2 steps of the edits (default the model's)")
    ap.add_argument("--sample-steps", type=int, default=None, help="sampling steps (default the model's)")
    ap.add_argument("--sampler", choices=["ddim", "dpm"], default="ddim")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="weight storage (engine.precision): auto = bf16 on a CUDA GPU, fp32 on CPU")
    ap.add_argument("--compile", action="store_true", help="torch.compile the UNet forward (reduce-overhead)")
    ap.add_argument("--toy-check", action="store_true",
                    help="instead: compare --precision with fp32 on a toy model (--toy-model; its codec too)")
    ap.add_argument("--toy-model", choices=("toy", "toy-flow"), default="toy",
                    help="--toy-check's model: toy (LoRA, η 0 and 1) or toy-flow (FlowEdit, strengths 0.6 and 0.9)")
    ap.add_argument("--toy-mode", default=None, help="--toy-check's edit mode (default: by model, see --toy-model)")
    a = ap.parse_args(argv)
    if a.toy_check:
        toy_check(a.device, a.precision, a.json, model=a.toy_model, mode=a.toy_mode)
        return 0
    rows = [r.strip() for r in a.rows.split(",") if r.strip()]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        ap.error(f"unknown rows {unknown}: use {','.join(ROWS)}")
    if a.smoke:
        a.device = "cpu" if a.device.startswith("cuda") and not torch.cuda.is_available() else a.device
        a.seconds = a.seconds or 2.0
        a.timed_steps = a.timed_steps or 2
        a.embed_steps, a.tune_steps, a.sample_steps = (a.embed_steps or 2, a.tune_steps or 2, a.sample_steps or 3)
    seconds = a.seconds or 10.0
    timed = a.timed_steps or 20

    from engine import precision as prec
    from engine.cache import StageCache
    from engine.editor import Editor
    from engine.params import EditParams, EditRequest, Inpaint, Region
    from engine.stages import finetune, optimize_embedding, sample

    unet_m = count_unet_params(a.model) / 1e6
    t0 = time.perf_counter()
    model = build_smoke(a.model).to(a.device, torch.float32) if a.smoke else build_real(a.model, a.device)
    prec.apply(model, a.precision, compile_unet=a.compile)
    build_s = time.perf_counter() - t0
    counts = param_counts(model)
    wdt = str(model.weight_dtype).replace("torch.", "")
    print(f"built {a.model} ({'smoke' if a.smoke else 'real size'}) on {a.device} in {build_s:.1f} s; "
          f"parameters (M): " + ", ".join(f"{k} {v:.1f}" for k, v in counts.items()), flush=True)
    if not a.smoke:
        print(f"denoiser {unet_m:.1f} M vs published {PUBLISHED_UNET_M[a.model]} M", flush=True)

    m = model
    sr = m.sample_rate
    n = min(int(seconds * sr), int(m.max_seconds * sr))
    wave = torch.zeros(1, m.padded_length(n))
    wave[0, :n] = torch.from_numpy(clip(n / sr, sr)[:, 0])
    z0 = m.encode_audio(wave)
    prompt = "a dog barking in a large hall"
    e, u = m.encode_prompt([prompt, ""]).split([1, 1])

    report = Report(a.json, {
        "model": a.model, "size": "smoke" if a.smoke else "real", "device": a.device, "machine": machine(a.device),
        "torch": torch.__version__, "seconds": seconds, "latent": list(z0.shape[1:]),
        "precision": f"{a.precision} ({wdt} weights)", "compile": a.compile, "unet_m": round(counts["unet"], 3),
        "published_m": PUBLISHED_UNET_M[a.model],
        "params_m": {k: round(v, 3) for k, v in counts.items()}, "build_s": round(build_s, 2)})
    print(f"\n{a.model}: latent {tuple(z0.shape[1:])}, {machine(a.device)}", flush=True)

    if "steps" in rows:
        kw = dict(lr=1e-4, rank=8, seed=0)
        s1 = per_step(lambda k: optimize_embedding(m, z0, e, steps=k, lr=2e-3, seed=0), timed)
        report.add({"what": "stage 1 step", "ms_per_step": s1 * 1e3, "peak_gpu_mib": _gpu_peak()})
        s2 = per_step(lambda k: finetune(m, z0, e, mode="lora", steps=k, **kw), timed)
        report.add({"what": "stage 2 LoRA step", "ms_per_step": s2 * 1e3, "peak_gpu_mib": _gpu_peak()})
        s2k = per_step(lambda k: finetune(m, z0, e, mode="lora", steps=k, draws=4, **kw), timed)
        report.add({"what": "stage 2 LoRA step, 4 noise draws", "ms_per_step": s2k * 1e3,
                    "peak_gpu_mib": _gpu_peak()})
        s2f = per_step(lambda k: finetune(m, z0, e, mode="full", steps=k, **kw), timed)
        report.add({"what": "stage 2 full step", "ms_per_step": s2f * 1e3, "peak_gpu_mib": _gpu_peak()})
        conds = [e] * a.etas
        s3 = per_step(lambda k: sample(m, conds, u, latent_shape=tuple(z0.shape[1:]), steps=k, guidance=3.0, seed=0,
                                       sampler=a.sampler), timed)
        report.add({"what": f"CFG sampling step, {a.etas} η (batch {2 * a.etas})", "ms_per_step": s3 * 1e3,
                    "peak_gpu_mib": _gpu_peak()})

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "clip.wav"
        sf.write(src, clip(seconds), 44100)
        editor = Editor(m, None, StageCache(Path(tmp) / "cache"))
        etas = tuple(round(0.2 * (i + 1), 2) for i in range(a.etas))
        base = EditParams(prompt, etas=etas, embed_steps=a.embed_steps, tune_steps=a.tune_steps,
                          sample_steps=a.sample_steps, sampler=a.sampler)

        def edit_row(what: str, params: EditParams) -> None:
            wall, peak, res = _measure(lambda: editor.edit(EditRequest(str(src), Region(), params)))
            split = {k: round(v, 3) for k, v in res.timings.items()}  # type: ignore[attr-defined]
            report.add({"what": what, "wall_s": wall, "split": split, "peak_gpu_mib": peak,
                        "cache_hit": res.cache_hit, "params": res.params,  # type: ignore[attr-defined]
                        "network_calls": res.network_calls})  # type: ignore[attr-defined]

        if "lora" in rows or "retake" in rows:
            edit_row(f"cold LoRA edit, {a.etas} η", base)
        if "retake" in rows:
            edit_row("cached re-take, 2 η", base.with_(etas=(0.3, 0.7)))
        if "sdedit" in rows:
            edit_row("SDEdit preview, 2 strengths", base.with_(mode="sdedit", etas=(0.3, 0.6)))
        if "flowedit" in rows and "flowedit" in m.modes:
            edit_row("FlowEdit preview, 2 strengths", base.with_(mode="flowedit", etas=(0.6, 0.9)))
        if "repaint" in rows and "repaint" in m.modes:
            third = Inpaint(seconds / 3, 2 * seconds / 3)
            edit_row("repaint, middle third, 2 strengths", base.with_(mode="repaint", etas=(1.0, 0.7), inpaint=third))
        if "cover" in rows and "cover" in m.modes:
            edit_row("cover, 2 strengths", base.with_(mode="cover", etas=(0.5, 1.0)))
        if "full" in rows:
            edit_row(f"cold full fine-tune edit, {a.etas} η", base.with_(mode="full"))

    print(report.table(), flush=True)
    return 0


def _gpu_peak() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


if __name__ == "__main__":
    raise SystemExit(main())
