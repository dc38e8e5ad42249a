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


# -- Stable Audio 3 at toy widths ---------------------------------------------------------------------------------

def offline_gemma_tokenizer(model_max_length: int = 64):
    """A GemmaTokenizer built in memory (no hub): specials at Gemma's ids (pad 0, eos 1, bos 2, unk 3), byte
    fall-back tokens for anything else, one token per printable ASCII character and '▁' for spaces. SA3's pipeline
    calls it exactly as the real one (``padding="max_length"``, truncation, ``batch_decode``)."""
    from transformers import GemmaTokenizer

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for ch in [chr(i) for i in range(33, 127)] + ["▁"]:
        vocab.setdefault(ch, len(vocab))
    # right padding (saved with the tokenizer): Conditioning pads masked sequences on the right
    return GemmaTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length, padding_side="right")


def tiny_sa3_components(seed: int = 0, *, latent_dim: int = 8, cond_dim: int = 32, embed_dim: int = 32,
                        num_heads: int = 2) -> dict:
    """The components of diffusers' ``StableAudio3Pipeline`` at toy widths, random weights, offline.

    Real geometry where it matters to the editor: 44.1 kHz stereo in and out of ``AutoencoderSAME`` (downsampling
    1024 instead of the real 4096, so short test clips still have a few dozen latent frames), a DiT that predicts
    velocity with the inpainting (local-additive) input, T5Gemma cross-attention plus the duration token, and the
    distilled checkpoints' 8-step ping-pong ``FlowMatchEulerDiscreteScheduler``. Keys are the pipeline's own
    (``StableAudio3Pipeline(**components)`` builds it). ``embed_dim``/``num_heads`` set the DiT's width (64 / 1 gives
    the real models' 64-wide heads, whose rotary embedding the reference and diffusers size alike).
    """
    from diffusers import AutoencoderSAME, FlowMatchEulerDiscreteScheduler, StableAudio3DiTModel
    from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import StableAudio3DurationEmbedder
    from transformers import T5GemmaConfig, T5GemmaEncoderModel
    from transformers.models.t5gemma.configuration_t5gemma import T5GemmaModuleConfig

    tokenizer = offline_gemma_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderSAME(audio_channels=2, patch_size=256, encoder_channels=8, encoder_c_mults=(2,),
                              encoder_strides=(4,), encoder_transformer_depths=(1,), latent_dim=latent_dim,
                              use_differential_attention=True, dim_heads=8, ff_mult=2, sampling_rate=44100)
        module = T5GemmaModuleConfig(vocab_size=len(tokenizer), hidden_size=cond_dim, intermediate_size=48,
                                     num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                     query_pre_attn_scalar=16, max_position_embeddings=128, sliding_window=64,
                                     layer_types=["full_attention", "full_attention"])
        text_encoder = T5GemmaEncoderModel(T5GemmaConfig(encoder=module.to_dict(), decoder=module.to_dict(),
                                                         is_encoder_decoder=False))
        duration_embedder = StableAudio3DurationEmbedder(output_dim=cond_dim, fourier_dim=16)
        transformer = StableAudio3DiTModel(io_channels=latent_dim, patch_size=1, embed_dim=embed_dim, depth=2,
                                           num_heads=num_heads,
                                           cond_token_dim=cond_dim, global_cond_dim=cond_dim,
                                           local_add_cond_dim=latent_dim + 1, timestep_features_dim=16, ff_mult=2,
                                           num_memory_tokens=4, use_differential_attention=True)
        # Zero-initialised parts (the residual convs, each block's inpainting projection) make a fresh DiT
        # ignore some of its inputs: give them weights so that every input (latent, time, text, duration, the
        # inpainting mask and latent) visibly reaches the output in tests.
        for conv in (transformer.preprocess_conv, transformer.postprocess_conv):
            torch.nn.init.normal_(conv.weight, std=0.2)
        for block in transformer.transformer_blocks:
            torch.nn.init.normal_(block.to_local_embed[-1].weight, std=0.2)
        # SAME zero-initialises each transformer layer's attention and feed-forward outputs and starts its output
        # tokens at ~1e-5: untrained, those tokens never hear the input (every clip encodes and decodes to the same
        # thing). Random ones instead, so the tiny codec is a (poor but real) function of its input.
        for name, p in vae.named_parameters():
            if name.endswith(("attn.to_out.weight", "ff.proj_out.weight", "new_tokens")):
                torch.nn.init.normal_(p, std=1.0 if name.endswith("new_tokens") else 0.3)
    _calibrate_same(vae)
    scheduler = FlowMatchEulerDiscreteScheduler(**sa3_scheduler_config(stochastic=True))
    return {"vae": vae.eval(), "text_encoder": text_encoder.eval(), "tokenizer": tokenizer,
            "duration_embedder": duration_embedder.eval(), "transformer": transformer.eval(), "scheduler": scheduler}


def _calibrate_same(vae) -> None:
    """Set the soft-norm bottleneck's running std so a test tone encodes to unit-variance latents, as trained SA3
    latents are (the flow's σ = 1 end is unit noise)."""
    t = torch.arange(1024 * 32) / 44100
    probe = 0.3 * torch.stack([torch.sin(2 * math.pi * 330 * t), torch.sin(2 * math.pi * 550 * t)])[None]
    with torch.no_grad():
        vae.bottleneck.running_std.fill_(1.0)
        std = vae.encode(probe).latents.std().item()
        vae.bottleneck.running_std.fill_(max(std, 1e-6))


def sa3_scheduler_config(*, stochastic: bool) -> dict:
    """``FlowMatchEulerDiscreteScheduler`` as SA3 samples: sigmas are supplied by the pipeline's log-SNR schedule,
    timesteps are the sigmas themselves (the DiT's Fourier time features expect t ∈ [0, 1], diffusers'
    ``StableAudio3DiTModel.forward`` docstring), hence ``num_train_timesteps=1``; ``stochastic_sampling`` is the
    distilled checkpoints' ping-pong re-noising (diffusers' SA3 pipeline docs: 8 steps), Euler for the base ones."""
    return dict(num_train_timesteps=1, shift=1.0, stochastic_sampling=stochastic)


# -- ACE-Step 1.5 at toy widths -----------------------------------------------------------------------------------

def offline_qwen_tokenizer(model_max_length: int = 4096):
    """A Qwen2-style byte-level BPE tokenizer built in memory (no hub): one token per byte (the 256 byte symbols of
    GPT-2's byte-level alphabet), no merges, and ``<|endoftext|>`` as Qwen's end, pad and template token (ACE-Step's
    prompt template writes it into the text). ACE-Step's pipeline calls it exactly as the real Qwen3 one."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Tokenizer

    vocab: dict[str, int] = {}
    for sym in sorted(ByteLevel.alphabet()):
        vocab.setdefault(sym, len(vocab))
    vocab["<|endoftext|>"] = len(vocab)
    return Qwen2Tokenizer(vocab=vocab, merges=[], model_max_length=model_max_length, unk_token=None,
                          pad_token="<|endoftext|>", eos_token="<|endoftext|>")


def tiny_ace_components(seed: int = 0, *, turbo: bool = True, latent_dim: int = 8, width: int = 32) -> dict:
    """The components of diffusers' ``AceStepPipeline`` at toy widths, random weights, offline.

    Real geometry where it matters to the editor: 48 kHz stereo in and out of ``AutoencoderOobleck`` with the real
    ↓1920 (25 latent frames a second), a time-major DiT with patch size 2, sliding-window and full attention, the
    in-context latents (source + chunk mask), a Qwen3 text encoder, the condition encoder's lyric and timbre
    encoders and its packing, the 5 Hz audio tokenizer and detokenizer cover uses, and the Euler scheduler as the
    pipeline configures it. ``turbo`` marks the DiT guidance-distilled (sampled without guidance); otherwise it is a
    base-like checkpoint guided with APG. Keys are the pipeline's own (``AceStepPipeline(**components)``)."""
    from diffusers import AceStepTransformer1DModel, AutoencoderOobleck, FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.ace_step import (
        AceStepAudioTokenDetokenizer,
        AceStepAudioTokenizer,
        AceStepConditionEncoder,
    )
    from transformers import Qwen3Config, Qwen3Model

    tokenizer = offline_qwen_tokenizer()
    heads = {"num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "sliding_window": 16}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = Qwen3Model(Qwen3Config(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width,
                                              num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                              head_dim=16, max_position_embeddings=8192))
        condition_encoder = AceStepConditionEncoder(hidden_size=width, intermediate_size=2 * width,
                                                    text_hidden_dim=width, timbre_hidden_dim=latent_dim,
                                                    num_lyric_encoder_hidden_layers=1,
                                                    num_timbre_encoder_hidden_layers=1, **heads)
        transformer = AceStepTransformer1DModel(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                                                in_channels=3 * latent_dim, audio_acoustic_hidden_dim=latent_dim,
                                                patch_size=2, is_turbo=turbo,
                                                model_version="turbo" if turbo else "base", **heads)
        pool = {"hidden_size": width, "intermediate_size": 2 * width, "audio_acoustic_hidden_dim": latent_dim,
                "pool_window_size": 5, "num_attention_pooler_hidden_layers": 1, **heads}
        audio_tokenizer = AceStepAudioTokenizer(fsq_dim=width, **pool)
        audio_token_detokenizer = AceStepAudioTokenDetokenizer(**pool)
        vae = AutoencoderOobleck(encoder_hidden_size=2 * latent_dim, downsampling_ratios=[2, 4, 4, 6, 10],
                                 channel_multiples=[1, 2, 2, 2, 2], decoder_channels=8,
                                 decoder_input_channels=latent_dim, audio_channels=2, sampling_rate=48000)
    _calibrate_oobleck(vae, latent_dim)
    with torch.no_grad():  # the learned silence latent is the VAE's encoding of silence: the tiny VAE's, tiled
        one = vae.encode(torch.zeros(1, 2, 48000)).latent_dist.mode().transpose(1, 2)
        frames = condition_encoder.silence_latent.shape[1]
        condition_encoder.silence_latent.copy_(one.repeat(1, -(-frames // one.shape[1]), 1)[:, :frames])
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0)
    return {"vae": vae.eval(), "text_encoder": text_encoder.eval(), "tokenizer": tokenizer,
            "transformer": transformer.eval(), "condition_encoder": condition_encoder.eval(),
            "scheduler": scheduler, "audio_tokenizer": audio_tokenizer.eval(),
            "audio_token_detokenizer": audio_token_detokenizer.eval()}


def _calibrate_oobleck(vae, latent_dim: int) -> None:
    """A random Oobleck encoder gives latents of std ≈ 0.06 and a posterior std ≈ 0.7, so its samples are mostly
    noise. Trained, the posterior is narrow and the latents about unit scale: scale the mean half of the last conv
    to unit std on a test tone and push the scale half far negative (posterior std ≈ 1e-4, the floor)."""
    conv = vae.encoder.conv2
    t = torch.arange(48000) / 48000
    probe = 0.3 * torch.stack([torch.sin(2 * math.pi * 330 * t), torch.sin(2 * math.pi * 550 * t)])[None]
    with torch.no_grad():
        std = vae.encode(probe).latent_dist.mode().std().item()
        gain = 1.0 / max(std, 1e-6)
        conv.weight_g[:latent_dim] *= gain
        conv.bias[:latent_dim] *= gain
        conv.bias[latent_dim:] = -30.0
