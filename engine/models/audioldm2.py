"""AudioLDM 2 (cvssp/audioldm2, -large, -music): a UNet conditioned on two sequences.

diffusers' ``AudioLDM2Pipeline.encode_prompt`` builds the conditioning in three steps, mirrored here: the CLAP
text feature (one vector, mask forced to 1) and the FLAN-T5 hidden states (with their padding mask) are projected
and wrapped in learned SOS/EOS embeddings by ``AudioLDM2ProjectionModel``; GPT-2 then generates 8 new hidden
states from that sequence. The UNet cross-attends to the GPT-2 states (``encoder_hidden_states``, no mask) and to
the T5 states (``encoder_hidden_states_1`` + ``encoder_attention_mask_1``). e_opt is therefore a pair of
sequences, and the T5 mask travels with the second one.

GPT-2 uses absolute positions and the T5 sequence is right-padded inside it, so the generated states depend on
the padded T5 length: the pipeline's own classifier-free guidance pads the empty prompt to the prompt's T5 length.
Encoding ``[prompt, ""]`` in one call reproduces that exactly (prompts are padded to the longest in the call).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from engine.errors import ModelUnavailable
from engine.mel import MelConfig
from engine.models.base import AudioModel, Conditioning

GPT_KEY = "encoder_hidden_states"  # GPT-2 generated states: fixed length, no mask
T5_KEY = "encoder_hidden_states_1"  # FLAN-T5 states: padded, masked


class AudioLDM2(AudioModel):
    """Adapter over the components of diffusers' ``AudioLDM2Pipeline``.

    ``clap`` is the full CLAP model (text and audio towers) with ``clap_tokenizer`` and ``clap_feature_extractor``:
    the pipeline uses it both as its first text encoder and to rank waveforms against text, so the scorer can too.
    """

    def __init__(self, *, name: str, unet, vae, vocoder, clap, clap_tokenizer, clap_feature_extractor, t5,
                 t5_tokenizer, projection, language_model, scheduler, max_new_tokens: int = 8,
                 max_seconds: float = 10.24, default_steps: int = 50, default_guidance: float = 3.5) -> None:
        self.name = name
        self.unet, self.vae, self.vocoder, self.scheduler = unet, vae, vocoder, scheduler
        self.clap, self.clap_tokenizer, self.clap_feature_extractor = clap, clap_tokenizer, clap_feature_extractor
        self.t5, self.t5_tokenizer = t5, t5_tokenizer
        self.projection, self.language_model = projection, language_model
        self.max_new_tokens = max_new_tokens
        self.max_seconds, self.default_steps, self.default_guidance = max_seconds, default_steps, default_guidance
        sr = int(vocoder.config.sampling_rate)
        self.mel = MelConfig(sample_rate=sr, n_mels=int(vocoder.config.model_in_dim), fmax=sr / 2)
        self._settle()

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> Conditioning:
        dev = self.device
        clap_tok = self.clap_tokenizer(prompts, padding="max_length", max_length=self.clap_tokenizer.model_max_length,
                                       truncation=True, return_tensors="pt")
        clap = self.clap.get_text_features(clap_tok.input_ids.to(dev), attention_mask=clap_tok.attention_mask.to(dev))
        clap = getattr(clap, "pooler_output", clap)[:, None, :]  # transformers 5 returns an output object
        clap_mask = torch.ones(clap.shape[:2], dtype=torch.long, device=dev)  # the pipeline attends to it always

        t5_tok = self.t5_tokenizer(prompts, padding=True, max_length=self.t5_tokenizer.model_max_length,
                                   truncation=True, return_tensors="pt")
        t5_mask = t5_tok.attention_mask.to(dev)
        t5 = self.t5(t5_tok.input_ids.to(dev), attention_mask=t5_mask)[0]

        pdt = self.projection.dtype
        proj = self.projection(hidden_states=clap.to(pdt), hidden_states_1=t5.to(pdt), attention_mask=clap_mask,
                               attention_mask_1=t5_mask)
        gpt = generate_hidden_states(self.language_model, proj.hidden_states, proj.attention_mask,
                                     self.max_new_tokens)
        return Conditioning({GPT_KEY: gpt.to(self.dtype), T5_KEY: t5.to(self.dtype)}, {T5_KEY: t5_mask})

    def predict_noise(self, z_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return self.unet(z_t, t, encoder_hidden_states=cond.tensors[GPT_KEY],
                         encoder_hidden_states_1=cond.tensors[T5_KEY],
                         encoder_attention_mask_1=cond.masks.get(T5_KEY), return_dict=False)[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> AudioLDM2:
        super().to(device, dtype)
        if self.dtype == torch.float16:  # T5 overflows in fp16 (FLAN-T5 was trained in bf16): keep it in fp32
            self.t5.to(torch.float32)
        return self


def generate_hidden_states(lm: torch.nn.Module, embeds: torch.Tensor, mask: torch.Tensor, n: int) -> torch.Tensor:
    """GPT-2 greedy "generation" in hidden-state space, as ``AudioLDM2Pipeline.generate_language_model``.

    Each step feeds the whole sequence (no KV cache: n = 8 steps on < 150 tokens) and appends the last layer's
    final hidden state; positions are 0..L-1 like the cached version, so the result is the same.
    """
    for _ in range(n):
        out = lm(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True, return_dict=True)
        embeds = torch.cat([embeds, out.hidden_states[-1][:, -1:, :]], dim=1)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
    return embeds[:, -n:, :]


def locate_snapshot(path_or_id: str, *, label: str, local_files_only: bool = True,
                    allow_patterns: list[str] | None = None) -> Path:
    """A local folder, or the hub snapshot of ``path_or_id`` (from the HF cache unless downloads are allowed).

    Never waits on a network when ``local_files_only``: a missing snapshot raises :class:`ModelUnavailable`.
    """
    p = Path(path_or_id).expanduser()
    if p.is_dir():
        return p
    looks_like_path = p.is_absolute() or path_or_id.startswith((".", "~")) or path_or_id.count("/") != 1
    if looks_like_path:
        raise ModelUnavailable(f"{label} weights not found: folder {path_or_id} does not exist; pass --model "
                               "/path/to/folder with the model files")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(path_or_id, local_files_only=local_files_only or _offline(),
                                      allow_patterns=allow_patterns))
    except Exception as err:  # LocalEntryNotFoundError, HFValidationError, network errors
        raise ModelUnavailable(
            f"{label} weights ({path_or_id}) are not on this machine: on a connected machine run "
            f"`hf download {path_or_id}`, copy the Hugging Face cache (~/.cache/huggingface/hub) "
            f"here, or pass --model /path/to/folder ({type(err).__name__})") from err


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def load_audioldm2(path_or_id: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, *,
                   local_files_only: bool = True, name: str | None = None) -> AudioLDM2:
    """Load from a hub id (already in the local HF cache unless downloads are allowed) or a diffusers folder."""
    from diffusers import AudioLDM2Pipeline, DDIMScheduler

    folder = locate_snapshot(path_or_id, label="AudioLDM 2", local_files_only=local_files_only)
    try:
        pipe = AudioLDM2Pipeline.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise ModelUnavailable(f"AudioLDM 2 weights in {folder} are incomplete or unreadable ({err}); "
                               f"download {path_or_id} again or pass --model /path/to/folder") from err
    if type(pipe.text_encoder_2).__name__ != "T5EncoderModel":
        raise ModelUnavailable(f"{path_or_id} is a text-to-speech AudioLDM 2 (VITS encoder); only the text-to-audio "
                               "checkpoints (cvssp/audioldm2, -large, -music) are supported")
    model = AudioLDM2(
        name=name or Path(path_or_id).name, unet=pipe.unet, vae=pipe.vae, vocoder=pipe.vocoder,
        clap=pipe.text_encoder, clap_tokenizer=pipe.tokenizer, clap_feature_extractor=pipe.feature_extractor,
        t5=pipe.text_encoder_2, t5_tokenizer=pipe.tokenizer_2, projection=pipe.projection_model,
        language_model=pipe.language_model, scheduler=DDIMScheduler.from_config(pipe.scheduler.config),
        max_new_tokens=int(getattr(pipe.language_model.config, "max_new_tokens", None) or 8))
    return model.to(device, dtype)


def tiny_audioldm2(seed: int = 0, *, max_seconds: float = 10.24) -> AudioLDM2:
    """The AudioLDM 2 classes at toy widths with random weights, built offline (tests, demo).

    Real geometry (64 mels, hop-160 vocoder, VAE ↓4 to 8 channels); attention only at the lowest UNet resolution.
    """
    from diffusers import AudioLDM2ProjectionModel, AudioLDM2UNet2DConditionModel, DDIMScheduler
    from transformers import (
        ByT5Tokenizer,
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapTextConfig,
        GPT2Config,
        GPT2Model,
        T5Config,
        T5EncoderModel,
    )

    from engine.models.tiny_parts import byte_roberta_tokenizer, tiny_ddim_config, tiny_vae, tiny_vocoder

    clap_tok = byte_roberta_tokenizer()
    t5_tok = ByT5Tokenizer(model_max_length=128)  # AudioLDM 2 hard-codes 128 T5 tokens
    gpt_dim, t5_dim, clap_dim = 16, 32, 16
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clap = ClapModel(ClapConfig(
            text_config=ClapTextConfig(vocab_size=len(clap_tok), hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=4, intermediate_size=37, projection_dim=clap_dim,
                                       max_position_embeddings=clap_tok.model_max_length + 4,
                                       bos_token_id=0, pad_token_id=1, eos_token_id=2).to_dict(),
            audio_config=ClapAudioConfig(spec_size=64, window_size=4, num_mel_bins=64, intermediate_size=37,
                                         depths=[2, 2], num_attention_heads=[2, 2], num_hidden_layers=2,
                                         hidden_size=192, projection_dim=clap_dim, patch_size=2, patch_stride=2,
                                         patch_embed_input_channels=4).to_dict(),
            projection_dim=clap_dim))
        t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tok), d_model=t5_dim, d_ff=37, d_kv=8, num_heads=4,
                                     num_layers=2))
        gpt = GPT2Model(GPT2Config(n_embd=gpt_dim, n_head=2, n_layer=2, vocab_size=8, n_positions=256,
                                    bos_token_id=0, eos_token_id=0))
        projection = AudioLDM2ProjectionModel(text_encoder_dim=clap_dim, text_encoder_1_dim=t5_dim,
                                              langauge_model_dim=gpt_dim)
        unet = AudioLDM2UNet2DConditionModel(
            in_channels=8, out_channels=8, block_out_channels=(16, 32, 64), layers_per_block=1, norm_num_groups=8,
            attention_head_dim=2, down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
            cross_attention_dim=([None, gpt_dim, t5_dim],) * 3)
    return AudioLDM2(name="tiny-audioldm2", unet=unet, vae=tiny_vae(seed), vocoder=tiny_vocoder(seed), clap=clap,
                     clap_tokenizer=clap_tok, clap_feature_extractor=ClapFeatureExtractor(), t5=t5,
                     t5_tokenizer=t5_tok, projection=projection, language_model=gpt,
                     scheduler=DDIMScheduler(**tiny_ddim_config()), max_seconds=max_seconds,
                     default_steps=25, default_guidance=3.5)
