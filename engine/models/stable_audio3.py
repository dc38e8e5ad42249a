"""Stable Audio 3 (Stability AI, 2026): a rectified-flow DiT on SAME latents of 44.1 kHz stereo audio.

Glue over diffusers' own modules (``StableAudio3DiTModel``, ``AutoencoderSAME``, ``StableAudio3DurationEmbedder``,
``FlowMatchEulerDiscreteScheduler``) and transformers' ``T5GemmaEncoderModel``, composed exactly as
``StableAudio3Pipeline`` / ``StableAudio3AudioToAudioPipeline`` / ``StableAudio3InpaintPipeline`` compose them
(diffusers 0.42.1, ``pipelines/stable_audio_3/``):

- text: the tokenizer pads to ``min(model_max_length, 256)`` tokens, T5Gemma's last hidden states are the
  cross-attention context with their mask (the DiT swaps padded positions for its learned padding embedding);
  e_opt is that (1, L, d) sequence plus its mask.
- duration: ``StableAudio3DurationEmbedder`` embeds the clip's length in seconds; the vector is both the DiT's global
  (AdaLN) input and one extra context token after the text. The pipelines give the requested duration and make
  ceil(duration × 44.1 kHz ÷ downsampling) latent frames; the editor likewise gives the window's own length
  (:meth:`clip_duration`), and a latent sampled without one is taken to be exactly its frames' length.
- audio: SAME encodes (B, 2, N) waveforms to (B, 256, N/4096) latents and back, no vocoder; no normalisation of the
  input level (the pipeline feeds the waveform as is) and the decoded audio is clamped to [−1, 1] as the pipeline
  does.
- inpainting: the DiT's local-additive input ``cat([mask, latent·mask])`` (1 = keep), the inpaint pipeline's own
  conditioning; the sampler then starts from pure noise and never blends.

The hub checkpoints are not in diffusers layout (diffusers' SA3 docs: "convert them locally"); ``aiedit models pull``
converts them (engine/models/convert_sa3.py) and :func:`load_stable_audio3` reads such a converted folder
(``model_index.json``, ``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``duration_embedder/``,
``scheduler/``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from engine.errors import ModelUnavailable
from engine.models.base import FLOW_MODES, AudioModel, Conditioning
from engine.schedules import FlowSchedule

KEY = "encoder_hidden_states"
MAX_TOKENS = 256  # SA3's T5Gemma max_length (diffusers' SA3 encode_prompt, from the reference model_config.json)
COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "duration_embedder", "scheduler")


class StableAudio3(AudioModel):
    """Adapter over the components of diffusers' ``StableAudio3Pipeline``."""

    channels = 2
    input_peak = None
    modes = FLOW_MODES
    can_invert = False  # engine.inversion is DDIM's (an ᾱ schedule); FlowEdit is the flow models' timing-keeping edit
    codec_modules = ("vae",)  # SAME: waveform ⇄ latent, no vocoder
    conditioning_kwargs = ("encoder_hidden_states", "global_hidden_states")

    def __init__(self, *, name: str, transformer, vae, text_encoder, tokenizer, duration_embedder, scheduler,
                 max_seconds: float | None = None, default_steps: int | None = None,
                 default_guidance: float | None = None) -> None:
        self.name = name
        self.unet = transformer  # the stages train and call "the denoiser" under this name
        self.vae, self.text_encoder, self.tokenizer = vae, text_encoder, tokenizer
        self.duration_embedder, self.scheduler = duration_embedder, scheduler
        self._schedule = FlowSchedule(scheduler)
        # One pass up to the checkpoint's own maximum (SA3 is trained on variable lengths): windows only beyond it.
        self.max_seconds = max_seconds or sa3_max_seconds(transformer.config, duration_embedder.config)
        # The pipeline's own default: 8 steps for the distilled (ping-pong) checkpoints, 100 for the base ones.
        self.default_steps = default_steps or (8 if self._schedule.stochastic else 100)
        # Guidance off (1) for the distilled checkpoints, which bake it in; 7 for the base (RF) ones, which need it:
        # Stability-AI/stable-audio-3 docs/workflows/inference.md ("cfg_scale ... Use 7.0 as a good default for RF").
        # diffusers' pipeline leaves it at 1 for both; the equality tests pass their guidance explicitly.
        if default_guidance is None:
            default_guidance = 1.0 if self._schedule.stochastic else 7.0
        self.default_guidance = default_guidance
        self._local: torch.Tensor | None = None
        self._duration: torch.Tensor | None = None  # the clip's seconds (0-d, on the device) while clip_duration runs
        for m in self.modules().values():
            m.eval().requires_grad_(False)

    # -- facts ------------------------------------------------------------------------------------------------

    @property
    def schedule(self) -> FlowSchedule:
        return self._schedule

    @property
    def sample_rate(self) -> int:
        return int(self.vae.config.sampling_rate)

    @property
    def prediction_type(self) -> str:
        return "flow"

    @property
    def num_train_timesteps(self) -> int:
        return self._schedule.num_train_timesteps

    @property
    def downsampling(self) -> int:
        return int(self.vae.downsampling_ratio)

    def conditioning_entries(self) -> list[str]:
        """The DiT projects its context and global input once (``to_cond_embed``, ``to_global_embed``), before any
        block's cross-attention or modulation reads them."""
        return ["to_cond_embed", "to_global_embed"]

    def lora_target_modules(self) -> list[str]:
        """The DiT's attention projections: self-attention ``to_qkv`` (fused) and ``to_out``, cross-attention
        ``to_q``, ``to_kv`` (fused) and ``to_out`` (diffusers' ``StableAudio3SelfAttention`` /
        ``StableAudio3CrossAttention``)."""
        return ["to_qkv", "to_q", "to_kv", "to_out"]

    # -- conditioning -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> Conditioning:
        length = min(getattr(self.tokenizer, "model_max_length", MAX_TOKENS), MAX_TOKENS)
        tok = self.tokenizer(prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
        mask = tok.attention_mask.to(self.device)
        hidden = self.text_encoder(tok.input_ids.to(self.device), attention_mask=mask)[0]
        return Conditioning({KEY: hidden.to(self.dtype)}, {KEY: mask})

    def seconds_of(self, latent_frames: int) -> float:
        """The duration conditioning for a latent of this many frames."""
        return latent_frames * self.downsampling / self.sample_rate

    def predict_noise(self, z_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The DiT's velocity, conditioned as the pipelines do: text context + duration token, duration as the
        global input, and the inpainting input while :meth:`masked_conditioning` is active."""
        b = z_t.shape[0]
        if self._duration is None:
            seconds = torch.full((b,), self.seconds_of(z_t.shape[-1]), dtype=torch.float32, device=z_t.device)
        else:  # a tensor, not a float: a compiled step takes it as an input instead of specialising on its value
            seconds = self._duration.expand(b)
        glob = self.duration_embedder(seconds)
        text = cond.tensors[KEY]
        mask = cond.masks.get(KEY)
        if mask is None:
            mask = torch.ones(text.shape[:2], dtype=torch.long, device=text.device)
        context = torch.cat([text, glob.unsqueeze(1).to(text.dtype)], dim=1)
        context_mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1)
        local = None if self._local is None else self._local.to(z_t.dtype).expand(b, -1, -1)
        return self.unet(z_t, t, encoder_hidden_states=context, global_hidden_states=glob,
                         encoder_attention_mask=context_mask, local_add_cond=local, return_dict=False)[0]

    @contextmanager
    def clip_duration(self, seconds: float) -> Iterator[None]:
        """The duration input is ``seconds`` (the clip's length) while the block runs, not the padded latent's."""
        saved = self._duration
        self._duration = torch.tensor(float(seconds), dtype=torch.float32, device=self.device)
        try:
            yield
        finally:
            self._duration = saved

    @contextmanager
    def masked_conditioning(self, z_ref: torch.Tensor | None, keep: torch.Tensor | None) -> Iterator[bool]:
        """The inpaint pipeline's ``local_add_cond = cat([mask, latent·mask])`` while the block runs."""
        if z_ref is None or keep is None:
            yield False
            return
        mask = keep.reshape(1, 1, -1).to(z_ref.device, z_ref.dtype).expand(z_ref.shape[0], 1, -1)
        self._local = torch.cat([mask, z_ref * mask], dim=1)
        try:
            yield True
        finally:
            self._local = None

    # -- audio ⇄ latent -----------------------------------------------------------------------------------------

    def padded_length(self, num_samples: int) -> int:
        r = self.downsampling
        return max(1, -(-num_samples // r)) * r

    @torch.no_grad()
    def audio_to_latent(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, 2, N) at 44.1 kHz (N a multiple of the downsampling) → (B, latent_dim, N / downsampling)."""
        vae_dtype = next(self.vae.parameters()).dtype
        ds = self.downsampling

        def encode(a: int, b: int) -> torch.Tensor:
            return self.vae.encode(wave[..., a * ds:b * ds].to(self.device, vae_dtype)).latents
        return _in_chunks(encode, wave.shape[-1] // ds, codec_reach(self.vae)).to(self.dtype).contiguous()

    @torch.no_grad()
    def latent_to_audio(self, latent: torch.Tensor) -> torch.Tensor:
        vae_dtype = next(self.vae.parameters()).dtype

        def decode(a: int, b: int) -> torch.Tensor:
            return self.vae.decode(latent[..., a:b].to(vae_dtype)).sample
        ds = self.downsampling
        out = _in_chunks(decode, latent.shape[-1], codec_reach(self.vae), scale=ds)
        return out.float().clamp(-1.0, 1.0)

    def encode_audio(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, N) mono or (B, 2, N) → latent (mono is duplicated to both channels)."""
        if wave.dim() == 2:
            wave = wave.unsqueeze(1).expand(-1, self.channels, -1)
        return self.audio_to_latent(wave)

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent → (B, 2, N)."""
        return self.latent_to_audio(latent)

    def frames_for(self, num_samples: int) -> int:
        return self.padded_length(num_samples) // self.downsampling


# -- the codec in chunks -----------------------------------------------------------------------------------------

# Latent frames one codec call produces (≈ 12 s of audio at SAME's ↓4096). diffusers' ``AutoencoderSAME`` attends
# through a dense (L, L) band mask over the whole clip (L ≈ 17 tokens per latent frame): 120 s of SAME-S is a
# 1.9 GB mask and 12 heads of scores that size. Its attention reaches only a few latent frames (a band of
# ``sliding_window`` segments per layer), so chunks with that reach as margin give the whole clip's result.
CODEC_CHUNK = 128


def codec_reach(vae) -> int:
    """How many latent frames on each side can change one latent frame's encoding (or one frame's decoded audio):
    each transformer layer of a resampling level sees ``sliding_window`` segments of that level either side, i.e.
    that many ÷ the later levels' strides in latent frames; one frame more for safety."""
    cfg = vae.config
    strides, depths = list(cfg.encoder_strides), list(cfg.encoder_transformer_depths)
    reach = 0
    for i, (depth, _) in enumerate(zip(depths, strides, strict=True)):
        later = math.prod(strides[i + 1:])
        reach += -(-depth * int(cfg.sliding_window) // later)
    return reach + 1


def _in_chunks(run, frames: int, reach: int, *, chunk: int | None = None, scale: int = 1) -> torch.Tensor:
    """``run(a, b)`` maps latent frames [a, b) to an output with ``scale`` time steps per frame; call it on chunks of
    ``chunk`` frames, each widened by ``reach`` frames of context either side, and join the chunks' own parts. A clip
    that fits in one chunk plus its margins is one call, exactly as before."""
    chunk = chunk or CODEC_CHUNK
    if frames <= chunk + 2 * reach:
        return run(0, frames)
    parts = []
    for start in range(0, frames, chunk):
        end = min(frames, start + chunk)
        a, b = max(0, start - reach), min(frames, end + reach)
        parts.append(run(a, b)[..., (start - a) * scale:(end - a) * scale])
    return torch.cat(parts, dim=-1)


# -- loading ----------------------------------------------------------------------------------------------------

def sa3_max_seconds(dit_config, duration_config=None) -> float:
    """The longest clip this checkpoint makes in one pass: its size's published maximum (catalog.SA3_MAX_SECONDS;
    a DiT as wide as medium's 1536 or wider is the medium size, narrower ones the small), and never beyond the
    duration its embedder can express (``max_val``: longer durations are clamped, so the DiT could not tell them
    apart)."""
    from engine.models.catalog import SA3_MAX_SECONDS

    width = int(getattr(dit_config, "embed_dim", 0) or 0)
    seconds = SA3_MAX_SECONDS["medium" if width >= 1536 else "small"]
    top = getattr(duration_config, "max_val", None) if duration_config is not None else None
    return float(min(seconds, top)) if top else float(seconds)


def load_stable_audio3(folder: str | Path, *, name: str | None = None) -> StableAudio3:
    """Load a Stable Audio 3 folder in diffusers' pipeline layout (a converted checkpoint, or one written by
    :func:`save_stable_audio3`). Each component loads with its own class, so a missing or broken part is named."""
    from diffusers import AutoencoderSAME, FlowMatchEulerDiscreteScheduler, StableAudio3DiTModel
    from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import StableAudio3DurationEmbedder
    from transformers import AutoTokenizer, T5GemmaEncoderModel

    path = Path(folder)
    missing = [c for c in COMPONENTS if not (path / c).is_dir()]
    if missing or not (path / "model_index.json").is_file():
        raise ModelUnavailable(
            f"{path} is not a Stable Audio 3 folder in diffusers layout (missing: "
            f"{', '.join(missing or ['model_index.json'])}): `aiedit models pull sa3-small|sa3-small-music|"
            "sa3-medium|sa3-medium-base` fetches and converts a hub checkpoint (`--from DIR`: one copied by hand)")
    scheduler_cfg = scheduler_config(json.loads((path / "scheduler" / "scheduler_config.json").read_text()), path)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler_cfg)
    model = StableAudio3(
        name=name or path.name,
        transformer=StableAudio3DiTModel.from_pretrained(path / "transformer"),
        vae=AutoencoderSAME.from_pretrained(path / "vae"),
        text_encoder=T5GemmaEncoderModel.from_pretrained(path / "text_encoder"),
        tokenizer=AutoTokenizer.from_pretrained(path / "tokenizer"),
        duration_embedder=StableAudio3DurationEmbedder.from_pretrained(path / "duration_embedder"),
        scheduler=scheduler)
    return model


# Scheduler classes a conversion may name → whether they re-noise (ping-pong, the distilled checkpoints) or take
# plain Euler steps (the base checkpoints). The newer diffusers conversion script writes the first two (classes
# absent from diffusers 0.42.1); both are the same rectified-flow sampler as FlowMatchEulerDiscreteScheduler.
STOCHASTIC_SCHEDULERS = {"PingPongScheduler": True, "StableAudio3EulerScheduler": False}


def scheduler_config(raw: dict, where: Path | str = "scheduler") -> dict:
    """A folder's scheduler config normalised to what the adapter samples with: the DiT's time input is σ ∈ [0, 1]
    (``StableAudio3DiTModel.forward``), so ``num_train_timesteps`` is 1 whatever the folder says (diffusers fills
    in 1000 when the key is missing: t ∈ [0, 1000], silent noise); the class name decides ping-pong or Euler (a
    missing ``stochastic_sampling`` would silently become Euler); an unknown class is refused. ``shift`` and the
    other grid options are kept: the sampler, SDEdit and FlowEdit all read the grid the scheduler makes."""
    cls = raw.get("_class_name", "FlowMatchEulerDiscreteScheduler")
    if cls == "FlowMatchEulerDiscreteScheduler":
        stochastic = bool(raw.get("stochastic_sampling", False))
    elif cls in STOCHASTIC_SCHEDULERS:
        stochastic = STOCHASTIC_SCHEDULERS[cls]
    else:
        known = ", ".join(["FlowMatchEulerDiscreteScheduler", *STOCHASTIC_SCHEDULERS])
        raise ModelUnavailable(f"{where}: unknown Stable Audio 3 scheduler {cls!r} (known: {known})")
    cfg = {k: v for k, v in raw.items() if not k.startswith("_")}
    return {**cfg, "num_train_timesteps": 1, "stochastic_sampling": stochastic}


def pipeline_of(model: StableAudio3, cls=None):
    """The diffusers pipeline (``StableAudio3Pipeline`` or its audio-to-audio / inpaint siblings) over the very
    modules this adapter holds: saving, and checking the adapter against diffusers' own sampling."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableAudio3Pipeline

    cls = cls or StableAudio3Pipeline
    pipe = cls(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
               duration_embedder=model.duration_embedder, transformer=model.unet,
               scheduler=FlowMatchEulerDiscreteScheduler.from_config(dict(model.scheduler.config)))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_stable_audio3(model: StableAudio3, folder: str | Path) -> Path:
    """Write the model as a diffusers pipeline folder that :func:`load_stable_audio3` (and
    ``StableAudio3Pipeline.from_pretrained``) read back."""
    path = Path(folder)
    pipeline_of(model).save_pretrained(path)
    return path


def tiny_stable_audio3(seed: int = 0, *, max_seconds: float | None = None, **widths: int) -> StableAudio3:
    """SA3's classes at toy widths with random weights (engine/models/tiny_parts.py), offline; its window is the
    small size's (120 s) unless ``max_seconds`` says otherwise; ``widths`` go to
    :func:`~engine.models.tiny_parts.tiny_sa3_components`."""
    from engine.models.tiny_parts import tiny_sa3_components

    return StableAudio3(name="tiny-sa3", max_seconds=max_seconds, **tiny_sa3_components(seed, **widths))
