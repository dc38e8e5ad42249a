"""TANGO (declare-lab/tango, tango-full, tango-full-ft-audiocaps, tango2, tango2-full) — the paper's model.

A diffusers ``UNet2DConditionModel`` cross-attends to FLAN-T5 hidden states with their padding mask (TANGO's
``AudioDiffusion.encode_text``: tokenizer ``max_length=model_max_length``, ``padding=True``, truncation; the UNet
gets ``encoder_attention_mask``). e_opt is one (1, L, d) sequence plus its mask.

The hub snapshot is not in diffusers layout: ``main_config.json`` (AudioDiffusion kwargs), ``pytorch_model_main.bin``
(its state dict: ``unet.*``, ``text_encoder.*``), ``vae_config.json`` + ``pytorch_model_vae.bin`` (the original
AudioLDM VAE, HiFi-GAN inside as ``vocoder.*``), ``stft_config.json`` (+ ``pytorch_model_stft.bin``, unused: our
mel front-end computes the same filters). The UNet config and the noise schedule live outside the snapshot
(TANGO's repo ``configs/diffusion_model_config.json``; ``stabilityai/stable-diffusion-2-1``'s scheduler), so both
are hard-coded here and nobody needs a second download for them. The schedule is SD 2.1's: **v-prediction**.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from engine.errors import ModelUnavailable
from engine.mel import MelConfig
from engine.models.audioldm2 import locate_snapshot
from engine.models.base import AudioModel, Conditioning

KEY = "encoder_hidden_states"

# declare-lab/tango configs/diffusion_model_config.json (cross_attention_dim = FLAN-T5-large d_model).
TANGO_UNET_CONFIG = {
    "act_fn": "silu", "attention_head_dim": [5, 10, 20, 20], "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False, "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "dual_cross_attention": False, "flip_sin_to_cos": True, "freq_shift": 0,
    "in_channels": 8, "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
    "num_class_embeds": None, "only_cross_attention": False, "out_channels": 8, "sample_size": [32, 2],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "use_linear_projection": True, "upcast_attention": True,
}

# stabilityai/stable-diffusion-2-1 scheduler/scheduler_config.json, which TANGO trains and samples with
# (it loads it into a DDPMScheduler; the betas and prediction type are what matter).
SD21_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, "prediction_type": "v_prediction",
}


class Tango(AudioModel):
    """Adapter over TANGO's UNet + FLAN-T5 encoder, with the VAE/vocoder converted to diffusers classes."""

    def __init__(self, *, name: str, unet, vae, vocoder, text_encoder, tokenizer, scheduler,
                 mel: MelConfig | None = None, max_seconds: float = 10.24, default_steps: int = 50,
                 default_guidance: float = 3.0) -> None:
        self.name = name
        self.unet, self.vae, self.vocoder, self.scheduler = unet, vae, vocoder, scheduler
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.mel = mel or MelConfig()
        self.max_seconds, self.default_steps, self.default_guidance = max_seconds, default_steps, default_guidance
        self._settle()

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> Conditioning:
        tok = self.tokenizer(prompts, max_length=self.tokenizer.model_max_length, padding=True, truncation=True,
                             return_tensors="pt")
        mask = tok.attention_mask.to(self.device)
        hidden = self.text_encoder(input_ids=tok.input_ids.to(self.device), attention_mask=mask)[0]
        return Conditioning({KEY: hidden.to(self.dtype)}, {KEY: mask})

    def predict_noise(self, z_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return self.unet(z_t, t, encoder_hidden_states=cond.tensors[KEY],
                         encoder_attention_mask=cond.masks.get(KEY), return_dict=False)[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Tango:
        super().to(device, dtype)
        if self.dtype == torch.float16:  # T5 overflows in fp16 (FLAN-T5 was trained in bf16): keep it in fp32
            self.text_encoder.to(torch.float32)
        return self


# -- loading ----------------------------------------------------------------------------------------------------

def load_tango(path_or_id: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, *,
               local_files_only: bool = True, name: str | None = None) -> Tango:
    """Load a TANGO hub snapshot (from the HF cache unless downloads are allowed) or a folder in that layout.

    Optional extras a folder may hold: the UNet config at ``main_config["unet_model_config_path"]`` (relative to
    the folder), ``vocoder_config.json`` (SpeechT5HifiGan fields), and T5 tokenizer files; otherwise TANGO's own
    UNet config, AudioLDM's HiFi-GAN config and ``main_config["text_encoder_name"]`` (google/flan-t5-large,
    tokenizer + config only) from the HF cache are used.
    """
    from diffusers import DDIMScheduler

    folder = locate_snapshot(path_or_id, label="TANGO", local_files_only=local_files_only)
    files = ("main_config.json", "vae_config.json", "pytorch_model_main.bin", "pytorch_model_vae.bin")
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise ModelUnavailable(f"TANGO folder {folder} lacks {', '.join(missing)}: download {path_or_id} again "
                               "(`hf download declare-lab/tango`) or pass --model /path/to/folder")
    main_cfg = _read_json(folder / "main_config.json")
    vae_cfg = _read_json(folder / "vae_config.json")
    mel = _mel_config(folder / "stft_config.json")

    main_sd = _load_bin(folder / "pytorch_model_main.bin")
    vae_sd = _load_bin(folder / "pytorch_model_vae.bin")
    if main_cfg.get("unet_model_name"):
        raise ModelUnavailable("TANGO checkpoints fine-tuned from a Stable Diffusion UNet (group_in/group_out) are "
                               "not supported")
    unet = _build_unet(folder, main_cfg, _strip(main_sd, "unet."))
    tokenizer, text_encoder = _build_text_encoder(folder, main_cfg, _strip(main_sd, "text_encoder."),
                                                  local_files_only)
    vae = _build_vae(vae_cfg, vae_sd)
    vocoder = _build_vocoder(folder, vae_sd)
    model = Tango(name=name or Path(path_or_id).name, unet=unet, vae=vae, vocoder=vocoder, text_encoder=text_encoder,
                  tokenizer=tokenizer, scheduler=DDIMScheduler(**SD21_SCHEDULER_CONFIG), mel=mel)
    return model.to(device, dtype)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelUnavailable(f"cannot read {path} ({err}); download the model again") from err


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) pickles cannot be memory-mapped
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated download, pickle with non-tensor payload, ...
        raise ModelUnavailable(f"cannot read {path} ({type(err).__name__}: {err}); download the model again") from err
    return sd.get("state_dict", sd)


def _strip(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _mel_config(path: Path) -> MelConfig:
    """The STFT TANGO trained with (TacotronSTFT kwargs); it must match what the VAE saw."""
    if not path.is_file():
        return MelConfig()
    c = _read_json(path)
    return MelConfig(sample_rate=int(c.get("sampling_rate", 16000)), n_fft=int(c.get("filter_length", 1024)),
                     hop_length=int(c.get("hop_length", 160)), win_length=int(c.get("win_length", 1024)),
                     n_mels=int(c.get("n_mel_channels", 64)), fmin=float(c.get("mel_fmin", 0.0)),
                     fmax=float(c.get("mel_fmax", 8000.0)))


def _load_into(module: torch.nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as err:
        raise ModelUnavailable(f"TANGO {what} weights do not match the expected architecture: "
                               f"{str(err).splitlines()[0]}") from err


def _build_unet(folder: Path, main_cfg: dict, sd: dict[str, torch.Tensor]):
    from diffusers import UNet2DConditionModel

    rel = main_cfg.get("unet_model_config_path")
    cfg_path = folder / rel if rel else None
    if cfg_path is not None and cfg_path.is_file():
        cfg = _read_json(cfg_path)
    else:
        cfg = dict(TANGO_UNET_CONFIG)
        probe = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
        if probe in sd:  # FLAN-T5-large → 1024, -xl → 2048
            cfg["cross_attention_dim"] = int(sd[probe].shape[1])
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(cfg)
    try:
        unet.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as err:
        raise ModelUnavailable(f"TANGO UNet weights do not match its config: {str(err).splitlines()[0]}") from err
    return unet


def _build_text_encoder(folder: Path, main_cfg: dict, sd: dict[str, torch.Tensor], local_files_only: bool):
    """FLAN-T5 encoder: weights from the snapshot when present, tokenizer/config from the text-encoder repo."""
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    te_name = main_cfg.get("text_encoder_name", "google/flan-t5-large")
    has_tok = any((folder / f).is_file() for f in ("spiece.model", "tokenizer.json", "tokenizer_config.json"))
    te_folder = folder if has_tok else locate_snapshot(
        te_name, label=f"TANGO's text encoder tokenizer ({te_name})", local_files_only=local_files_only,
        allow_patterns=None if sd else ["*.json", "*.model", "*.safetensors"])
    try:
        tokenizer = AutoTokenizer.from_pretrained(te_folder, local_files_only=True)
        if not sd:  # older snapshots without the frozen encoder inside pytorch_model_main.bin
            return tokenizer, T5EncoderModel.from_pretrained(te_folder, local_files_only=True)
        encoder = T5EncoderModel(T5Config.from_pretrained(te_folder, local_files_only=True))
    except (OSError, ValueError) as err:
        raise ModelUnavailable(f"TANGO's text encoder files ({te_name}) are incomplete in {te_folder}: run "
                               f"`hf download {te_name}` on a connected machine ({err})") from err
    sd = dict(sd)
    shared = sd.get("shared.weight", sd.get("encoder.embed_tokens.weight"))
    sd.setdefault("shared.weight", shared)
    sd.setdefault("encoder.embed_tokens.weight", shared)
    expected = set(encoder.state_dict())
    _load_into(encoder, {k: v for k, v in sd.items() if k in expected}, "text encoder")
    return tokenizer, encoder


def _build_vae(vae_cfg: dict, sd: dict[str, torch.Tensor]):
    from diffusers import AutoencoderKL

    from engine.models.convert_original import convert_vae_state_dict, vae_config_from_ddconfig

    if "scale_factor" not in vae_cfg:
        raise ModelUnavailable("TANGO vae_config.json has no scale_factor; download the model again")
    try:
        cfg = vae_config_from_ddconfig(vae_cfg["ddconfig"], vae_cfg["scale_factor"])
        converted = convert_vae_state_dict(sd)
    except (KeyError, ValueError) as err:
        raise ModelUnavailable(f"TANGO VAE weights are not in the original AudioLDM layout ({err})") from err
    with torch.device("meta"):
        vae = AutoencoderKL(**cfg)
    try:
        vae.load_state_dict(converted, strict=True, assign=True)
    except RuntimeError as err:
        raise ModelUnavailable(f"TANGO VAE weights do not match vae_config.json: {str(err).splitlines()[0]}") from err
    return vae


def _build_vocoder(folder: Path, vae_sd: dict[str, torch.Tensor]):
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    from engine.models.convert_original import HIFIGAN_16K_64, convert_hifigan_state_dict

    if not any(k.startswith("vocoder.") for k in vae_sd):
        raise ModelUnavailable("TANGO pytorch_model_vae.bin holds no vocoder.* weights; download the model again")
    extra = folder / "vocoder_config.json"
    cfg = SpeechT5HifiGanConfig(**{**HIFIGAN_16K_64, **(_read_json(extra) if extra.is_file() else {})})
    vocoder = SpeechT5HifiGan(cfg)
    _load_into(vocoder, convert_hifigan_state_dict(vae_sd, model_in_dim=cfg.model_in_dim), "vocoder")
    return vocoder


# -- tiny offline model -----------------------------------------------------------------------------------------

def tiny_tango(seed: int = 0, *, max_seconds: float = 10.24) -> Tango:
    """TANGO's classes at toy widths with random weights, built offline (tests, demo).

    Same schedule as the real model (SD 2.1's, v-prediction), real mel geometry, ByT5 tokenizer (no files).
    """
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    from engine.models.tiny_parts import tiny_vae, tiny_vocoder

    tokenizer = ByT5Tokenizer(model_max_length=512)  # FLAN-T5's tokenizer allows 512 tokens
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=37, d_kv=8, num_heads=4,
                                               num_layers=2))
        unet = UNet2DConditionModel(**tiny_tango_unet_config())
    return Tango(name="tiny-tango", unet=unet, vae=tiny_vae(seed), vocoder=tiny_vocoder(seed),
                 text_encoder=text_encoder, tokenizer=tokenizer, scheduler=DDIMScheduler(**SD21_SCHEDULER_CONFIG),
                 max_seconds=max_seconds, default_steps=25, default_guidance=3.0)


def tiny_tango_unet_config(cross_attention_dim: int = 32) -> dict:
    """Toy UNet2DConditionModel kwargs: attention only at the lowest resolution (CPU time)."""
    return {"in_channels": 8, "out_channels": 8, "block_out_channels": [16, 32, 64], "layers_per_block": 1,
            "norm_num_groups": 8, "attention_head_dim": 2, "cross_attention_dim": cross_attention_dim,
            "down_block_types": ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"]}
