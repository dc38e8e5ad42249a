"""ACE-Step 1.5 (ACE Studio and StepFun, 2026): a flow-matching DiT on 25 Hz Oobleck latents of 48 kHz stereo music.

Glue over diffusers' own modules (``AceStepTransformer1DModel``, ``AceStepConditionEncoder``,
``AceStepAudioTokenizer`` / ``AceStepAudioTokenDetokenizer``, ``AutoencoderOobleck``,
``FlowMatchEulerDiscreteScheduler``) and transformers' Qwen3 text encoder, composed as ``AceStepPipeline.__call__``
composes them (diffusers 0.42.1, ``pipelines/ace_step/``):

- text: the caption goes into the pipeline's SFT template (a task instruction, the caption, and the metadata
  ``bpm / timesignature / keyscale / duration``) through the whole Qwen3 encoder; the lyrics (with their language)
  through its token embeddings only. ``AceStepConditionEncoder`` turns both, plus a timbre reference (the learned
  silence latent when there is none, as the pipeline does), into one packed sequence: that sequence (B, L, d) is the
  conditioning the stages optimise (stage 1) and interpolate by η (stage 3). Each prompt is encoded alone (the
  pipeline's batch of one): the DiT's cross-attention has no padding mask, so a prompt padded in a batch would
  attend to its padding. A batch mixing lengths is run one length at a time (:meth:`AceStep.predict_noise`).
- the unconditional branch is the condition encoder's learned ``null_condition_emb`` broadcast over the sequence
  (the pipeline's, for base / sft; an empty prompt here means it); guidance is the pipeline's APG (adaptive
  projected guidance: momentum −0.75, norm threshold 2.5, over time), not plain CFG; the turbo checkpoint is
  guidance-distilled and runs without.
- latents: ``AutoencoderOobleck`` encodes (B, 2, N) at 48 kHz to (B, 64, N/1920) — channel-first, as the stages see
  every latent. The DiT is time-major: :meth:`predict_noise` transposes to (B, T, 64), prepends the in-context
  latents (source latents + chunk mask, ``context_latents``) and transposes back. The posterior's mean is the
  latent (the pipeline samples it; an edit wants the same latent for the same audio).
- schedule: Euler steps on the pipeline's shifted linear σ grid (``engine.schedules.ShiftedFlowSchedule``; the
  DiT's time input is σ ∈ [0, 1], ``timestep_r`` = ``timestep``).
- tasks: a plain edit (lora, full, sdedit, flowedit) conditions like ``task_type="text2music"`` (silence as the
  source latents, chunk mask 1). ``repaint`` and ``cover`` are the pipeline's own (:meth:`AceStep.native_edit`):
  repaint puts the source latents outside the range and silence inside with chunk mask 1 inside, and encodes the
  repaint instruction; cover puts the source's 5 Hz semantic tokens (tokenised and detokenised back to 25 Hz) in
  the context, and blends the cover velocity with the text-only one by the cover strength.
- where this differs from the pipeline: on the guided checkpoints (sft, base) a cover below strength 1 is guided as
  a whole (APG of the blended velocity against the null condition) where the pipeline guides the cover branch alone
  and blends in an unguided text-only branch; FlowEdit mixes its branches with its own plain CFG
  (engine/flowedit.py), not APG. Turbo runs neither guidance, so there all three tasks are the pipeline's exactly.

Loading: a folder in diffusers' pipeline layout (``model_index.json``, e.g. ``ACE-Step/acestep-v15-xl-turbo-diffusers``
or a folder written by diffusers' ``scripts/convert_ace_step_to_diffusers.py``), or the checkpoints as ACE-Step
publishes them (``ACE-Step/Ace-Step1.5``: ``acestep-v15-turbo/``, ``vae/``, ``Qwen3-Embedding-0.6B/``; the sft and
base DiTs in their own repositories), read directly: the DiT's single ``model.safetensors`` is split into the
components by key prefix and renamed to diffusers' names, as that conversion script does.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from engine import calls
from engine.errors import InputError, ModelUnavailable
from engine.models.base import AudioModel, Conditioning, PromptContext
from engine.params import MUSIC_FIELDS, MUSIC_FLOW_MODES, MusicContext
from engine.schedules import ShiftedFlowSchedule

KEY = "encoder_hidden_states"
PLAIN = "plain_hidden_states"  # cover: the text2music conditioning its velocity is blended with
WEIGHTS = "cover_weights"  # cover: (B, 2) = (strength, 1 − strength), computed in double as the pipeline does
MAX_TEXT_TOKENS, MAX_LYRIC_TOKENS = 256, 2048  # AceStepPipeline.encode_prompt's defaults
TIMBRE_SECONDS = 30  # the pipeline's timbre reference: 30 s of silence latent when no reference audio is given
DEFAULT_LANGUAGE = "en"  # the pipeline's ``vocal_language`` default
# Sampling defaults per checkpoint: turbo is distilled to 8 steps without guidance (diffusers' ACE-Step docs);
# base and sft run with APG at guidance 7 (the pipeline's default scale) and 50 steps (the ACE-Step-1.5 README's
# model zoo: "Step 50"; diffusers' docs: "commonly 30-60 on base/sft"). Shift 3 for all (diffusers' documented
# default for every variant).
TURBO = {"steps": 8, "guidance": 1.0, "shift": 3.0}
GUIDED = {"steps": 50, "guidance": 7.0, "shift": 3.0}
APG = {"momentum": -0.75, "norm_threshold": 2.5}  # AceStepPipeline.__call__, step 10
REPAINT_MIN_S = 0.08  # two latent frames: a shorter range leaves nothing between the splice's fades


def _instruction(task: str) -> str:
    from diffusers.pipelines.ace_step.pipeline_ace_step import TASK_INSTRUCTIONS

    return TASK_INSTRUCTIONS[task]


def format_prompt(caption: str, *, task: str = "text2music", seconds: float | None = None,
                  music: MusicContext | None = None) -> tuple[str, str]:
    """(text, lyrics) strings exactly as ``AceStepPipeline._format_prompt`` writes them for the text encoder: the
    SFT template with the task's instruction, the caption and the metadata; the lyrics with their language.
    ``bpm`` is written as a whole number and the time signature as its beats per bar (ACE-Step's metadata format:
    ``"4"`` for 4/4, ``"6"`` for 6/8)."""
    from diffusers import AceStepPipeline
    from diffusers.pipelines.ace_step.pipeline_ace_step import SFT_GEN_PROMPT

    m = music or MusicContext()
    bpm = None if m.bpm is None else round(m.bpm)
    beats = m.beats_per_bar()
    metas = AceStepPipeline._build_metadata_string(bpm=bpm, keyscale=m.key,
                                                   timesignature=None if beats is None else str(beats),
                                                   audio_duration=seconds if seconds is not None else 60.0)
    text = SFT_GEN_PROMPT.format(_instruction(task), caption, metas)
    lyrics = f"# Languages\n{m.language or DEFAULT_LANGUAGE}\n\n# Lyric\n{m.lyrics or ''}<|endoftext|>"
    return text, lyrics


class AceStep(AudioModel):
    """Adapter over the components of diffusers' ``AceStepPipeline``."""

    channels = 2
    input_peak = None
    modes = MUSIC_FLOW_MODES
    takes = MUSIC_FIELDS
    can_invert = False  # engine.inversion is DDIM's; FlowEdit is the flow models' timing-keeping edit
    max_seconds = 600.0  # ACE-Step 1.5 makes 10 s to 10 min (its README): one window covers what the daemon allows

    def __init__(self, *, name: str, transformer, condition_encoder, vae, text_encoder, tokenizer, scheduler,
                 audio_tokenizer=None, audio_token_detokenizer=None, shift: float | None = None,
                 default_steps: int | None = None, default_guidance: float | None = None) -> None:
        self.name = name
        self.unet = transformer  # the stages train and call "the denoiser" under this name
        self.condition_encoder, self.vae = condition_encoder, vae
        self.text_encoder, self.tokenizer, self.scheduler = text_encoder, tokenizer, scheduler
        self.audio_tokenizer, self.audio_token_detokenizer = audio_tokenizer, audio_token_detokenizer
        cfg = transformer.config
        self.variant = "turbo" if (cfg.get("is_turbo") or cfg.get("model_version") == "turbo") else \
            (cfg.get("model_version") or "base")
        self.guidance_distilled = self.variant == "turbo"
        plan = TURBO if self.guidance_distilled else GUIDED
        self._schedule = ShiftedFlowSchedule(scheduler, shift=shift if shift is not None else plan["shift"])
        self.default_steps = default_steps or plan["steps"]
        self.default_guidance = default_guidance if default_guidance is not None else plan["guidance"]
        self.mode_notes = {"repaint": "repaint on the turbo checkpoint: ACE-Step's maintainers advise ace-step-sft "
                                      "for repaint (turbo can drop vocals and leave rough seams, ACE-Step-1.5 issue "
                                      "1151)"} if self.variant == "turbo" else {}
        self._context: torch.Tensor | None = None  # (1, T, 2·latent) in-context latents while a task runs
        self._silence_cache: dict[tuple, torch.Tensor] = {}
        for m in self.modules().values():
            m.eval().requires_grad_(False)

    # -- facts ------------------------------------------------------------------------------------------------

    @property
    def schedule(self) -> ShiftedFlowSchedule:
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
        return int(math.prod(self.vae.config.downsampling_ratios))

    @property
    def latents_per_second(self) -> float:
        return self.sample_rate / self.downsampling

    @property
    def latent_dim(self) -> int:
        return int(self.unet.config.audio_acoustic_hidden_dim)

    @property
    def repaint_seconds(self) -> tuple[float, float]:  # type: ignore[override]
        """The repaint ranges this model takes: at least two latent frames, at most one window."""
        return REPAINT_MIN_S, self.max_seconds

    def conditioning_entries(self) -> list[str]:
        """The DiT projects the packed condition once (``condition_embedder``) before any cross-attention reads it:
        that layer stays in full precision under bf16 (engine.precision)."""
        return ["condition_embedder"]

    def lora_target_modules(self) -> list[str]:
        """The DiT's attention projections, self- and cross-attention alike (``AceStepAttention``: ``to_q``,
        ``to_k``, ``to_v``, ``to_out.0``; grouped-query, so K/V are narrower than Q)."""
        return ["to_q", "to_k", "to_v", "to_out.0"]

    # -- conditioning -----------------------------------------------------------------------------------------

    def encode_prompt(self, prompts: list[str]) -> Conditioning:
        return self.encode(prompts)

    @torch.no_grad()
    def encode(self, prompts: list[str], context: PromptContext | None = None) -> Conditioning:
        """Each prompt encoded alone as the pipeline encodes a batch of one; an empty prompt is the learned null
        condition, broadcast over the longest sequence of the batch (the pipeline's unconditional branch)."""
        ctx = context or PromptContext()
        encoded = {p: self._encode_one(p, ctx) for p in dict.fromkeys(prompts) if p}
        length = max((h.shape[1] for h in encoded.values()), default=1)
        null = self.condition_encoder.null_condition_emb.to(self.device, self.dtype)
        parts = []
        for p in prompts:
            if p:
                parts.append(Conditioning({KEY: encoded[p]}, {KEY: torch.ones(encoded[p].shape[:2], dtype=torch.long,
                                                                               device=self.device)}))
            else:
                h = null.expand(1, length, -1).clone()
                parts.append(Conditioning({KEY: h}, {KEY: torch.ones(1, length, dtype=torch.long,
                                                                     device=self.device)}))
        return Conditioning.cat(parts)

    def _encode_one(self, prompt: str, ctx: PromptContext) -> torch.Tensor:
        text, lyrics = format_prompt(prompt, task=ctx.task, seconds=ctx.seconds, music=ctx.music)
        tok = self.tokenizer
        t = tok([text], padding="longest", truncation=True, max_length=MAX_TEXT_TOKENS, return_tensors="pt")
        ly = tok([lyrics], padding="longest", truncation=True, max_length=MAX_LYRIC_TOKENS, return_tensors="pt")
        dev = self.device
        text_h = self.text_encoder(input_ids=t.input_ids.to(dev)).last_hidden_state
        lyric_h = self.text_encoder.get_input_embeddings()(ly.input_ids.to(dev))
        frames = math.ceil(TIMBRE_SECONDS * self.latents_per_second)
        silence = self.condition_encoder.silence_latent
        refer = silence[:, :frames, :].to(dev, text_h.dtype)
        hidden, _ = self.condition_encoder(
            text_hidden_states=text_h, text_attention_mask=t.attention_mask.to(dev).bool(),
            lyric_hidden_states=lyric_h, lyric_attention_mask=ly.attention_mask.to(dev).bool(),
            refer_audio_acoustic_hidden_states_packed=refer,
            refer_audio_order_mask=torch.zeros(1, dtype=torch.long, device=dev))
        return hidden.to(self.dtype)

    def guidance_rule(self) -> Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor] | None:
        """APG as ``AceStepPipeline`` guides base / sft: ``normalized_guidance(cond, uncond, g − 1, momentum,
        eta=0, norm_threshold=2.5, use_original_formulation=True)`` with the norm over time, one momentum buffer
        per sampling run (rows are independent: a take alone equals itself in a batch)."""
        from diffusers.guiders.adaptive_projected_guidance import MomentumBuffer, normalized_guidance

        buffer = MomentumBuffer(momentum=APG["momentum"])

        def rule(out_u: torch.Tensor, out_c: torch.Tensor, guidance: Any) -> torch.Tensor:
            v = normalized_guidance(pred_cond=out_c.transpose(1, 2), pred_uncond=out_u.transpose(1, 2),
                                    guidance_scale=float(guidance) - 1.0, momentum_buffer=buffer, eta=0.0,
                                    norm_threshold=APG["norm_threshold"], use_original_formulation=True,
                                    norm_dim=(1,))
            return v.transpose(1, 2)
        return rule

    # -- the denoiser -------------------------------------------------------------------------------------------

    def silence(self, frames: int) -> torch.Tensor:
        """The learned silence latent tiled to ``frames`` (1, frames, latent), time-major (the pipeline's
        ``prepare_src_latents`` without source audio)."""
        key = (frames, self.device, self.dtype)
        if key not in self._silence_cache:
            s = self.condition_encoder.silence_latent.to(self.device, self.dtype)
            reps = -(-frames // s.shape[1])
            self._silence_cache = {key: s.repeat(1, reps, 1)[:, :frames, :].contiguous()}
        return self._silence_cache[key]

    def text2music_context(self, frames: int) -> torch.Tensor:
        """Silence as the source, chunk mask 1 everywhere: the in-context latents of a plain generation."""
        src = self.silence(frames)
        return torch.cat([src, torch.ones_like(src)], dim=-1)

    def predict_noise(self, z_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The DiT's velocity for channel-first latents (B, latent, T): time-major inside, the in-context latents of
        the task that runs (text2music outside :meth:`native_edit`), and cover's velocity blend when the
        conditioning carries one."""
        b, _, frames = z_t.shape
        x = z_t.transpose(1, 2)
        ctx = self._context if self._context is not None else self.text2music_context(frames)
        ctx = ctx.expand(b, -1, -1)
        v = self._velocity(x, t, cond.tensors[KEY], cond.masks.get(KEY), ctx)
        if WEIGHTS in cond.tensors:
            w = cond.tensors[WEIGHTS]
            if bool((w[:, 1] != 0).any()):  # the pipeline skips the text-only branch at strength 1
                calls.tick(self)  # a second DiT call after the first: one more sequential network call
                plain = self._velocity(x, t, cond.tensors[PLAIN], cond.masks.get(PLAIN), ctx)
                v = w[:, :1, None].to(v.dtype) * v + w[:, 1:, None].to(v.dtype) * plain
        return v.transpose(1, 2)

    def _velocity(self, x: torch.Tensor, t: torch.Tensor, hidden: torch.Tensor, mask: torch.Tensor | None,
                  ctx: torch.Tensor) -> torch.Tensor:
        """One DiT call, or one per sequence length when padded rows share the batch (no mask reaches the
        cross-attention, so each row must see exactly its own tokens)."""
        lengths = None if mask is None else mask.sum(1)
        if lengths is None or bool((lengths == hidden.shape[1]).all()):
            return self._dit(x, t, hidden, ctx)
        out = torch.empty_like(x)
        for i, n in enumerate(lengths.unique().tolist()):
            if i:
                calls.tick(self)  # each further length is one more sequential DiT call
            rows = (lengths == n).nonzero().squeeze(1)
            out[rows] = self._dit(x[rows], t[rows], hidden[rows, :n], ctx[rows]).to(out.dtype)
        return out

    def _dit(self, x: torch.Tensor, t: torch.Tensor, hidden: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        wdt = next(self.unet.parameters()).dtype  # bf16 storage: the time embedding and context need its dtype
        t = t.to(wdt)
        return self.unet(x, timestep=t, timestep_r=t, encoder_hidden_states=hidden,
                         context_latents=ctx.to(wdt), return_dict=False)[0]

    # -- the model's own tasks ------------------------------------------------------------------------------------

    def repaint_context(self, z0: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Source latents outside the range, silence inside, chunk mask 1 inside (``_build_chunk_mask`` and the
        repaint substitution of ``AceStepPipeline.__call__``), time-major (1, T, 2·latent)."""
        src = z0[:1].transpose(1, 2).to(self.dtype)
        frames = src.shape[1]
        inside = (keep.reshape(-1)[-frames:] < 0.5).to(self.device) if keep.numel() > 1 else \
            torch.zeros(frames, dtype=torch.bool, device=self.device)
        chunk = inside.to(self.dtype)[None, :, None].expand_as(src)
        src = torch.where(chunk > 0.5, self.silence(frames), src)
        return torch.cat([src, chunk], dim=-1)

    @torch.no_grad()
    def cover_context(self, z0: torch.Tensor) -> torch.Tensor:
        """The source's 5 Hz semantic tokens back at 25 Hz as the source latents, chunk mask 1 (the pipeline's
        ``prepare_src_latents`` for ``task_type="cover"``), time-major (1, T, 2·latent)."""
        if self.audio_tokenizer is None or self.audio_token_detokenizer is None:
            raise InputError(f"{self.name} has no audio tokenizer: cover needs a checkpoint that includes it "
                             "(ACE-Step's own checkpoints do)")
        src = z0[:1].transpose(1, 2)
        frames = src.shape[1]
        wdt = next(self.audio_tokenizer.parameters()).dtype
        quantized, _ = self.audio_tokenizer.tokenize(src.to(wdt), self.condition_encoder.silence_latent.to(wdt))
        tokens = self.audio_token_detokenizer(quantized.to(wdt))[:, :frames, :].to(self.dtype)
        return torch.cat([tokens, torch.ones_like(tokens)], dim=-1)

    @contextmanager
    def in_context(self, context: torch.Tensor | None) -> Iterator[None]:
        """The DiT sees ``context`` as its in-context latents while the block runs."""
        self._context = context
        try:
            yield
        finally:
            self._context = None

    def native_edit(self, task: str, z0: torch.Tensor, cond: Conditioning, plain: Conditioning,
                    uncond: Conditioning | None, *, strengths: list[float], keep: torch.Tensor | None, steps: int,
                    guidance: float, seed: int, on_step: Callable[[int, int, float | None], None]) -> torch.Tensor:
        """``repaint``: every take samples under the repaint context, starting inside the range at its strength
        (1 = from pure noise, as the pipeline); the editor splices the range into the input. ``cover``: one take per
        cover strength, from pure noise, the cover velocity blended with the text-only one by the strength."""
        from engine.stages import sample

        shape = tuple(z0.shape[1:])
        if task == "repaint":
            if keep is None:
                raise InputError("repaint needs a time range (inpaint)")
            with self.in_context(self.repaint_context(z0, keep)):
                return sample(self, [cond] * len(strengths), uncond, latent_shape=shape, steps=steps,
                              guidance=guidance, seed=seed, z_ref=z0, strength=[float(s) for s in strengths],
                              on_step=on_step)
        if task == "cover":
            conds = [cover_conditioning(cond, plain, float(s)) for s in strengths]
            un = None if uncond is None else cover_conditioning(uncond, uncond, 1.0)
            if all(s >= 1.0 for s in strengths):
                conds, un = [cond] * len(strengths), uncond
            with self.in_context(self.cover_context(z0)):
                return sample(self, conds, un, latent_shape=shape, steps=steps, guidance=guidance, seed=seed,
                              on_step=on_step)
        raise InputError(f"{self.name} has no task {task!r}")

    # -- audio ⇄ latent -----------------------------------------------------------------------------------------

    def padded_length(self, num_samples: int) -> int:
        r = self.downsampling
        return max(1, -(-num_samples // r)) * r

    def frames_for(self, num_samples: int) -> int:
        return self.padded_length(num_samples) // self.downsampling

    @torch.no_grad()
    def audio_to_latent(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, 2, N) at 48 kHz (N a multiple of the downsampling) → (B, latent, N / downsampling): the posterior
        mean."""
        vae_dtype = next(self.vae.parameters()).dtype
        return self.vae.encode(wave.to(self.device, vae_dtype)).latent_dist.mode().to(self.dtype)

    @torch.no_grad()
    def latent_to_audio(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, latent, T) → (B, 2, N). The pipeline's anti-clip step (a take peaking above 1 is scaled down to 1) but
        not its −1 dBFS loudness normalisation: a take keeps the level the model gives it."""
        vae_dtype = next(self.vae.parameters()).dtype
        audio = self.vae.decode(latent.to(vae_dtype)).sample.float()
        peak = audio.abs().amax(dim=(1, 2), keepdim=True)
        return audio / peak.clamp(min=1.0)

    def encode_audio(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, N) mono or (B, 2, N) → latent (mono is duplicated to both channels)."""
        if wave.dim() == 2:
            wave = wave.unsqueeze(1).expand(-1, self.channels, -1)
        return self.audio_to_latent(wave)

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        return self.latent_to_audio(latent)


def cover_conditioning(cond: Conditioning, plain: Conditioning, strength: float) -> Conditioning:
    """A cover take's conditioning: the cover-instructed sequence, the text-only one and the blend weights
    (strength, 1 − strength) computed in double as the pipeline's Python floats are."""
    w = torch.tensor([[strength, 1.0 - strength]], dtype=torch.float64).to(cond.tensors[KEY].device, torch.float32)
    return Conditioning({KEY: cond.tensors[KEY], PLAIN: plain.tensors[KEY], WEIGHTS: w},
                        {KEY: cond.masks[KEY], PLAIN: plain.masks[KEY]})


# -- loading ----------------------------------------------------------------------------------------------------

DIFFUSERS_COMPONENTS = ("transformer", "condition_encoder", "vae", "text_encoder", "tokenizer", "scheduler")
TEXT_ENCODER_DIR, VAE_DIR = "Qwen3-Embedding-0.6B", "vae"  # beside the DiT folders in ACE-Step's checkpoints
# Original ACE-Step key names → diffusers' (the attention projections of AceStepAttention, and the patchify convs
# that the original wraps in an nn.Sequential), as diffusers' scripts/convert_ace_step_to_diffusers.py renames them.
ATTENTION_RENAMES = ((".q_proj.", ".to_q."), (".k_proj.", ".to_k."), (".v_proj.", ".to_v."),
                     (".o_proj.", ".to_out.0."), (".q_norm.", ".norm_q."), (".k_norm.", ".norm_k."))
PREFIXES = {"decoder.": "transformer", "encoder.": "condition_encoder", "tokenizer.": "audio_tokenizer",
            "detokenizer.": "audio_token_detokenizer"}


def scheduler_config(raw: dict | None = None) -> dict:
    """``FlowMatchEulerDiscreteScheduler`` as ACE-Step samples: σ ∈ [0, 1] is the DiT's time input
    (``num_train_timesteps=1``) and the pipeline's grid comes already shifted (``shift=1``)."""
    cfg = {k: v for k, v in (raw or {}).items() if not k.startswith("_")}
    return {**cfg, "num_train_timesteps": 1, "shift": 1.0, "stochastic_sampling": False,
            "use_dynamic_shifting": False}


def component_configs(original: dict) -> dict[str, dict]:
    """Each component's kwargs from an ACE-Step DiT ``config.json`` (what the conversion script writes): the XL
    models' narrower condition encoder is ``encoder_*``; the 2B ones use the DiT's widths."""
    o = original
    enc = {k: o.get(f"encoder_{k}") or o[k]
           for k in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads")}
    shared = {"head_dim": o["head_dim"], "rope_theta": o["rope_theta"], "attention_bias": o["attention_bias"],
              "attention_dropout": o["attention_dropout"], "rms_norm_eps": o["rms_norm_eps"],
              "sliding_window": o["sliding_window"]}
    pooler = o.get("num_attention_pooler_hidden_layers", 2)
    layers = o.get("layer_types")  # None: the classes' own alternation (sliding, full, sliding, …)
    transformer = {k: o[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                     "num_key_value_heads", "in_channels", "audio_acoustic_hidden_dim", "patch_size")}
    transformer.update(shared, layer_types=layers, encoder_hidden_size=enc["hidden_size"],
                       is_turbo=bool(o.get("is_turbo", False)),
                       model_version=o.get("model_version"))
    condition = {**enc, **shared, "text_hidden_dim": o["text_hidden_dim"], "timbre_hidden_dim": o["timbre_hidden_dim"],
                 "num_lyric_encoder_hidden_layers": o["num_lyric_encoder_hidden_layers"],
                 "num_timbre_encoder_hidden_layers": o["num_timbre_encoder_hidden_layers"]}
    pool = {**enc, **shared, "audio_acoustic_hidden_dim": o["audio_acoustic_hidden_dim"],
            "pool_window_size": o.get("pool_window_size", 5), "num_attention_pooler_hidden_layers": pooler,
            "layer_types": layers[:pooler] if layers else None}
    tokenizer = {**pool, "fsq_dim": o.get("fsq_dim", enc["hidden_size"]),
                 "fsq_input_levels": o.get("fsq_input_levels", [8, 8, 8, 5, 5, 5]),
                 "fsq_input_num_quantizers": o.get("fsq_input_num_quantizers", 1)}
    return {"transformer": transformer, "condition_encoder": condition, "audio_tokenizer": tokenizer,
            "audio_token_detokenizer": pool}


def split_original_state(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """An original ``model.safetensors`` state dict → one state dict per diffusers component."""
    out: dict[str, dict[str, torch.Tensor]] = {c: {} for c in PREFIXES.values()}
    for key, value in state.items():
        if key == "null_condition_emb":
            out["condition_encoder"][key] = value
            continue
        prefix = next((p for p in PREFIXES if key.startswith(p)), None)
        if prefix is None:
            continue  # nothing else is in the released checkpoints; an unknown extra is not ours to load
        new = key[len(prefix):]
        if prefix == "decoder.":
            new = new.replace("proj_in.1.", "proj_in_conv.").replace("proj_out.1.", "proj_out_conv.")
        for old, renamed in ATTENTION_RENAMES:
            new = new.replace(old, renamed)
        out[PREFIXES[prefix]][new] = value
    return out


def load_ace_step(folder: str | Path, *, name: str | None = None, shared: str | Path | None = None) -> AceStep:
    """Load ACE-Step from a diffusers pipeline folder, or from an original DiT folder plus the folder holding
    ``vae/`` and ``Qwen3-Embedding-0.6B/`` (``shared``; default: the DiT folder's parent, as in ACE-Step's
    ``checkpoints/``). Each component loads with its own class, so a missing or broken part is named."""
    path = Path(folder)
    if (path / "model_index.json").is_file():
        return _load_diffusers(path, name or path.name)
    from engine.models.inventory import ace_dit_ok

    if ace_dit_ok(path):
        return _load_original(path, Path(shared) if shared else path.parent, name or path.name)
    raise ModelUnavailable(f"{path} is not an ACE-Step folder: expected diffusers' pipeline layout (model_index.json) "
                           "or an ACE-Step DiT folder (config.json + model.safetensors) with vae/ and "
                           f"{TEXT_ENCODER_DIR}/ beside it")


def _load_diffusers(path: Path, name: str) -> AceStep:
    from diffusers import AceStepTransformer1DModel, AutoencoderOobleck, FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.ace_step import (
        AceStepAudioTokenDetokenizer,
        AceStepAudioTokenizer,
        AceStepConditionEncoder,
    )
    from transformers import AutoModel, AutoTokenizer

    missing = [c for c in DIFFUSERS_COMPONENTS if not (path / c).is_dir()]
    if missing:
        raise ModelUnavailable(f"{path} is an incomplete ACE-Step pipeline folder (missing: {', '.join(missing)})")
    raw = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    extra = {}
    if (path / "audio_tokenizer").is_dir() and (path / "audio_token_detokenizer").is_dir():
        extra = {"audio_tokenizer": AceStepAudioTokenizer.from_pretrained(path / "audio_tokenizer"),
                 "audio_token_detokenizer": AceStepAudioTokenDetokenizer.from_pretrained(
                     path / "audio_token_detokenizer")}
    return AceStep(name=name, transformer=AceStepTransformer1DModel.from_pretrained(path / "transformer"),
                   condition_encoder=AceStepConditionEncoder.from_pretrained(path / "condition_encoder"),
                   vae=AutoencoderOobleck.from_pretrained(path / "vae"),
                   text_encoder=AutoModel.from_pretrained(path / "text_encoder"),
                   tokenizer=AutoTokenizer.from_pretrained(path / "tokenizer"),
                   scheduler=FlowMatchEulerDiscreteScheduler.from_config(scheduler_config(raw)), **extra)


def _load_original(dit: Path, shared: Path, name: str) -> AceStep:
    from diffusers import AceStepTransformer1DModel, AutoencoderOobleck, FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.ace_step import (
        AceStepAudioTokenDetokenizer,
        AceStepAudioTokenizer,
        AceStepConditionEncoder,
    )
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    for need in (shared / VAE_DIR, shared / TEXT_ENCODER_DIR):
        if not need.is_dir():
            raise ModelUnavailable(f"{need} is missing: ACE-Step's DiT needs the vae/ and {TEXT_ENCODER_DIR}/ folders "
                                   "of ACE-Step/Ace-Step1.5 (`aiedit models pull ace-step` fetches them)")
    configs = component_configs(json.loads((dit / "config.json").read_text()))
    index = dit / "model.safetensors.index.json"
    files = sorted({dit / f for f in json.loads(index.read_text())["weight_map"].values()}) if index.is_file() \
        else [dit / "model.safetensors"]
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    parts = split_original_state(state)
    silence = dit / "silence_latent.pt"
    if not silence.is_file():
        raise ModelUnavailable(f"{silence} is missing (the learned silence latent ACE-Step conditions on)")
    parts["condition_encoder"]["silence_latent"] = torch.load(silence, map_location="cpu",
                                                              weights_only=True).transpose(1, 2).contiguous()
    classes = {"transformer": AceStepTransformer1DModel, "condition_encoder": AceStepConditionEncoder,
               "audio_tokenizer": AceStepAudioTokenizer, "audio_token_detokenizer": AceStepAudioTokenDetokenizer}
    modules = {}
    for comp, cls in classes.items():
        with torch.device("meta"):
            module = cls(**configs[comp])
        try:
            module.load_state_dict(parts[comp], strict=True, assign=True)
        except RuntimeError as exc:
            lines = str(exc).splitlines()
            raise ModelUnavailable(f"{dit}: the {comp} weights do not match its config: "
                                   f"{(lines[1] if len(lines) > 1 else lines[0])[:200].strip()}") from None
        modules[comp] = module.float()
    text = shared / TEXT_ENCODER_DIR
    return AceStep(name=name, vae=AutoencoderOobleck.from_pretrained(shared / VAE_DIR),
                   text_encoder=AutoModel.from_pretrained(text), tokenizer=AutoTokenizer.from_pretrained(text),
                   scheduler=FlowMatchEulerDiscreteScheduler(**scheduler_config()), **modules)


def original_state(model: AceStep) -> dict[str, torch.Tensor]:
    """The model's DiT, condition encoder and audio tokenizers as one state dict in ACE-Step's original key names
    (the inverse of :func:`split_original_state`): how tests write an original-layout checkpoint."""
    back = {v: k for k, v in PREFIXES.items()}
    out: dict[str, torch.Tensor] = {}
    comps = {"transformer": model.unet, "condition_encoder": model.condition_encoder,
             "audio_tokenizer": model.audio_tokenizer, "audio_token_detokenizer": model.audio_token_detokenizer}
    for comp, module in comps.items():
        for key, value in module.state_dict().items():
            if comp == "condition_encoder" and key in ("null_condition_emb", "silence_latent"):
                if key == "null_condition_emb":
                    out[key] = value.contiguous()
                continue
            new = key
            for old, renamed in ATTENTION_RENAMES:
                new = new.replace(renamed, old)
            if comp == "transformer":
                new = new.replace("proj_in_conv.", "proj_in.1.").replace("proj_out_conv.", "proj_out.1.")
            out[back[comp] + new] = value.contiguous()
    return out


def pipeline_of(model: AceStep):
    """diffusers' ``AceStepPipeline`` over the very modules this adapter holds: saving, and checking the adapter
    against diffusers' own sampling."""
    from diffusers import AceStepPipeline, FlowMatchEulerDiscreteScheduler

    pipe = AceStepPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
                           transformer=model.unet, condition_encoder=model.condition_encoder,
                           scheduler=FlowMatchEulerDiscreteScheduler.from_config(dict(model.scheduler.config)),
                           audio_tokenizer=model.audio_tokenizer,
                           audio_token_detokenizer=model.audio_token_detokenizer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_ace_step(seed: int = 0, *, turbo: bool = True) -> AceStep:
    """ACE-Step's classes at toy widths with random weights (engine/models/tiny_parts.py), offline."""
    from engine.models.tiny_parts import tiny_ace_components

    return AceStep(name="tiny-ace", **tiny_ace_components(seed, turbo=turbo))
