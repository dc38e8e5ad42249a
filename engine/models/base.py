"""The interface the three edit stages need from a latent audio diffusion model.

Stages see only this: audio ⇄ latent, prompt → conditioning, noise prediction, the training noise schedule and a
few facts (sample rate, window, defaults). Each model family maps its own text encoders and UNet call onto it, the
way a diffusers pipeline composes components, so the stage code is written once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from engine.mel import MelConfig, wav_to_logmel
from engine.params import DDPM_MODES, FLOW_MODES, MusicContext
from engine.schedules import DDPMSchedule, Schedule

__all__ = ["DDPM_MODES", "FLOW_MODES", "AudioModel", "Conditioning", "PromptContext"]


@dataclass(frozen=True)
class PromptContext:
    """What a prompt's conditioning may depend on besides its text, for models whose text encoding carries more
    (ACE-Step writes a task instruction, the song's metadata and the clip's duration into it; the other families
    ignore all of it). ``task`` is ``"text2music"`` (a plain edit), or a native mode (``"repaint"``, ``"cover"``:
    ``engine.params.NATIVE_MODES``); ``seconds`` is the length of the window being edited."""

    task: str = "text2music"
    seconds: float | None = None
    music: MusicContext = field(default_factory=MusicContext)


@dataclass
class Conditioning:
    """Everything the UNet consumes for a batch of prompts.

    ``tensors`` are the embeddings the edit optimises and interpolates (batch first). ``masks`` hold attention
    masks keyed by the tensor they belong to (``(B, L)``, 1 = real token); they never train and travel along.
    """

    tensors: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def detach(self) -> Conditioning:
        return Conditioning({k: v.detach().clone() for k, v in self.tensors.items()},
                            {k: v.clone() for k, v in self.masks.items()})

    def trainable(self) -> Conditioning:
        """A detached copy whose tensors require grad (stage 1 optimises these)."""
        c = self.detach()
        for v in c.tensors.values():
            v.requires_grad_(True)
        return c

    def parameters(self) -> list[torch.Tensor]:
        return list(self.tensors.values())

    def lerp(self, other: Conditioning, eta: float) -> Conditioning:
        """η·other + (1−η)·self, the paper's Eq. (2) with self = e_opt and other = e_target.

        Written as a sum of two products so η = 0 and η = 1 give exactly e_opt and e_target, bit for bit.
        """
        a, b = self.aligned_with(other)
        out = {}
        for k in a.tensors:
            if eta == 0:
                out[k] = a.tensors[k].clone()
            elif eta == 1:
                out[k] = b.tensors[k].clone()
            else:
                out[k] = (1.0 - eta) * a.tensors[k] + eta * b.tensors[k]
        masks = {k: torch.maximum(a.masks[k], b.masks[k]) for k in a.masks}
        return Conditioning(out, masks)

    def aligned_with(self, other: Conditioning) -> tuple[Conditioning, Conditioning]:
        """Pad masked sequences of both to a common length so they can be mixed or batched."""
        return Conditioning.cat([self, other]).split([self.batch_size, other.batch_size])  # type: ignore[return-value]

    @staticmethod
    def cat(items: list[Conditioning]) -> Conditioning:
        """Concatenate along the batch, zero-padding masked sequences (mask 0) to the longest."""
        keys = items[0].tensors.keys()
        tensors, masks = {}, {}
        for k in keys:
            parts = [c.tensors[k] for c in items]
            if k in items[0].masks:
                length = max(p.shape[1] for p in parts)
                parts = [_pad_seq(p, length) for p in parts]
                masks[k] = torch.cat([_pad_seq(c.masks[k], length) for c in items])
            tensors[k] = torch.cat(parts)
        return Conditioning(tensors, masks)

    def split(self, sizes: list[int]) -> list[Conditioning]:
        out: list[Conditioning] = []
        start = 0
        for n in sizes:
            out.append(Conditioning({k: v[start:start + n] for k, v in self.tensors.items()},
                                    {k: v[start:start + n] for k, v in self.masks.items()}))
            start += n
        return out

    def repeat(self, n: int) -> Conditioning:
        return Conditioning({k: v.repeat_interleave(n, 0) for k, v in self.tensors.items()},
                            {k: v.repeat_interleave(n, 0) for k, v in self.masks.items()})

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Conditioning:
        return Conditioning({k: v.to(device=device, dtype=dtype or v.dtype) for k, v in self.tensors.items()},
                            {k: v.to(device) for k, v in self.masks.items()})

    def state(self) -> dict[str, torch.Tensor]:
        """Flat tensors for saving (cache); inverse of :meth:`from_state`."""
        d = {f"t.{k}": v.detach().cpu().contiguous() for k, v in self.tensors.items()}
        d.update({f"m.{k}": v.detach().cpu().contiguous() for k, v in self.masks.items()})
        return d

    @staticmethod
    def from_state(state: dict[str, torch.Tensor]) -> Conditioning:
        return Conditioning({k[2:]: v for k, v in state.items() if k.startswith("t.")},
                            {k[2:]: v for k, v in state.items() if k.startswith("m.")})


def _pad_seq(x: torch.Tensor, length: int) -> torch.Tensor:
    if x.shape[1] == length:
        return x
    pad = torch.zeros((x.shape[0], length - x.shape[1], *x.shape[2:]), dtype=x.dtype, device=x.device)
    return torch.cat([x, pad], dim=1)


class AudioModel(ABC):
    """A latent audio diffusion model as the edit sees it.

    Subclasses set the attributes below and implement prompt encoding and the denoiser call. The defaults of the
    audio path are the AudioLDM family's (16 kHz mono, a log-mel VAE plus a HiFi-GAN vocoder); a family with
    another codec (Stable Audio 3: a waveform autoencoder, 44.1 kHz stereo) overrides ``audio_to_latent`` /
    ``latent_to_audio`` / ``padded_length`` and the facts below.
    """

    name: str
    cache_id: str = ""  # what the stage cache keys on (set by the registry); falls back to ``name``
    unet: nn.Module  # the denoising network the stages call and fine-tune (a UNet, or SA3's DiT)
    vae: nn.Module
    vocoder: nn.Module
    scheduler: object  # a diffusers scheduler holding the training noise schedule
    mel: MelConfig = MelConfig()
    channels: int = 1  # audio channels the model hears and makes
    input_peak: float | None = 0.5  # peak the input is normalised to (AudioLDM's training); None = level kept
    modes: tuple[str, ...] = DDPM_MODES  # the edit modes this model can run (see engine.params.MODES)
    takes: tuple[str, ...] = ()  # the musical-context fields its conditioning uses (engine.params.MUSIC_FIELDS)
    guidance_distilled: bool = False  # guidance is baked into the weights: classifier-free guidance is not run
    mode_notes: Mapping[str, str] = MappingProxyType({})  # a line the result carries when a mode runs on this model
    repaint_seconds: tuple[float, float] = (0.0, float("inf"))  # the ranges its own repaint takes (native modes)
    can_invert: bool = True  # DDIM inversion (engine.inversion) for ``--start inversion``: ᾱ-schedule models
    max_seconds: float = 10.24  # the window the model was trained on; longer clips are edited in windows
    frame_multiple: int = 16  # mel frames must be a multiple of this (VAE × UNet downsampling)
    default_steps: int = 100
    default_guidance: float = 3.0
    # Stage-1/2 settings that suit this model better than the paper's (keys of ``PAPER_STAGE_DEFAULTS``).
    stage_defaults: Mapping[str, Any] = MappingProxyType({})
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32  # latents and conditionings (what the stages see and train)
    weight_dtype: torch.dtype | None = None  # how the weights are stored, when not ``dtype`` (engine.precision)
    # The audio codec (VAE, vocoder, SA3's SAME, any family's): stored in ``dtype`` on every device. A bf16 decode of
    # a toy-flow latent is 18 dB SNR against fp32 and moved FlowEdit takes 2-2.7× more than a change of seed.
    codec_modules: tuple[str, ...] = ("vae", "vocoder")
    # Denoiser keyword inputs that carry the conditioning the edit interpolates (η): they reach the denoiser in
    # ``dtype``, and its first layers that read them (:meth:`conditioning_entries`) stay in ``dtype`` too, so η values
    # closer than bf16's resolution are not one tensor at the boundary.
    conditioning_kwargs: tuple[str, ...] = ("encoder_hidden_states", "encoder_hidden_states_1", "class_labels")

    @property
    def sample_rate(self) -> int:
        return self.mel.sample_rate

    @property
    def schedule(self) -> Schedule:
        """The prediction / loss / sampling rules (engine.schedules); the AudioLDM family's ᾱ schedule by default."""
        cached = self.__dict__.get("_schedule")
        if cached is None or cached.scheduler is not self.scheduler:
            cached = DDPMSchedule(self.scheduler)
            self.__dict__["_schedule"] = cached
        return cached

    @property
    def max_sample_steps(self) -> int:
        return self.schedule.max_steps

    @property
    def prediction_type(self) -> str:
        return self.scheduler.config.prediction_type  # type: ignore[attr-defined]

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)  # type: ignore[attr-defined]

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)  # type: ignore[attr-defined]

    @abstractmethod
    def encode_prompt(self, prompts: list[str]) -> Conditioning:
        """Text → conditioning, exactly as the model's own pipeline builds it (no guidance duplication)."""

    def encode(self, prompts: list[str], context: PromptContext | None = None) -> Conditioning:
        """Text (and, for models that take them, the task, duration and musical context) → conditioning. The empty
        prompt is the unconditional branch of guidance. Families whose encoding is the text alone ignore
        ``context``."""
        return self.encode_prompt(prompts)

    @abstractmethod
    def predict_noise(self, z_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The UNet's output (ε or v, per ``prediction_type``) for noisy latents at timesteps ``t``."""

    def conditioning_entries(self) -> list[str]:
        """Names (in the denoiser) of the layers that read :attr:`conditioning_kwargs` first: the key and value
        projections of every cross-attention (diffusers' ``Attention`` with ``is_cross_attention``) and a class
        embedding. A family with another denoiser names its own."""
        names = [f"{name}.{proj}" for name, mod in self.unet.named_modules()
                 if getattr(mod, "is_cross_attention", False) for proj in ("to_k", "to_v") if hasattr(mod, proj)]
        if getattr(self.unet, "class_embedding", None) is not None:
            names.append("class_embedding")
        return names

    def storage_dtype(self, name: str) -> torch.dtype:
        """How the module ``name`` of :meth:`modules` is stored: the codec in ``dtype``, the rest in weight dtype."""
        return self.dtype if name in self.codec_modules else (self.weight_dtype or self.dtype)

    def guidance_rule(self) -> Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor] | None:
        """A fresh combine ``(out_uncond, out_cond, guidance) → output`` for one sampling run, when the model's own
        pipeline guides otherwise than classifier-free guidance (ACE-Step's APG keeps a momentum across steps);
        None = ``out_u + g·(out_c − out_u)``."""
        return None

    def native_edit(self, task: str, z0: torch.Tensor, cond: Conditioning, plain: Conditioning,
                    uncond: Conditioning | None, *, strengths: list[float], keep: torch.Tensor | None, steps: int,
                    guidance: float, seed: int, on_step: Callable[[int, int, float | None], None]) -> torch.Tensor:
        """Run one of the model's own tasks (``engine.params.NATIVE_MODES``) on the window latent ``z0``: one take
        per strength, (len(strengths), *latent). ``cond`` is the prompt encoded for ``task``, ``plain`` for a plain
        edit; ``keep`` (1 = keep) is the inpainting range. Only models that list such modes implement it."""
        raise NotImplementedError(f"{self.name} has no native task {task!r}")

    def lora_target_modules(self) -> list[str]:
        """Module-name suffixes that get LoRA adapters (attention projections by default)."""
        return ["to_q", "to_k", "to_v", "to_out.0"]

    # -- audio ⇄ latent (shared by the AudioLDM family) -------------------------------------------------------

    @torch.no_grad()
    def encode_audio(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, N) waveform at ``sample_rate`` → scaled latent (B, C, T/4, F/4); N must fill whole frames."""
        mel = wav_to_logmel(wave.to(self.device, torch.float32), self.mel)  # (B, T, n_mels)
        mel = mel.unsqueeze(1).to(next(self.vae.parameters()).dtype)
        posterior = self.vae.encode(mel).latent_dist
        return (posterior.mode() * self.scaling_factor).to(self.dtype)

    @torch.no_grad()
    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """Scaled latent → (B, N) waveform at ``sample_rate``."""
        vae_dtype = next(self.vae.parameters()).dtype
        mel = self.vae.decode((latent / self.scaling_factor).to(vae_dtype)).sample  # (B, 1, T, n_mels)
        wave = self.vocoder(mel.squeeze(1).to(next(self.vocoder.parameters()).dtype))
        return wave.float()

    # -- audio ⇄ latent as the editor sees it: (B, channels, N) at ``sample_rate`` --------------------------------

    def padded_length(self, num_samples: int) -> int:
        """Samples the codec needs to cover ``num_samples`` (whole mel frames / latent frames)."""
        return self.frames_for(num_samples) * self.mel.hop_length

    def audio_to_latent(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, channels, padded N) → latent; mono models take channel 0."""
        return self.encode_audio(wave[:, 0])

    def latent_to_audio(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent → (B, channels, N) waveform."""
        return self.decode_latent(latent).unsqueeze(1)

    @contextmanager
    def clip_duration(self, seconds: float) -> Iterator[None]:
        """While the block runs, the audio being edited is ``seconds`` long (before the codec pads it): what a model
        conditioned on duration hears (SA3's duration input, as its pipelines give the requested length). The
        AudioLDM family has no such input."""
        yield

    @contextmanager
    def masked_conditioning(self, z_ref: torch.Tensor | None, keep: torch.Tensor | None) -> Iterator[bool]:
        """Inpainting conditioning of the model's own, if it has one (yields True: the sampler then leaves the
        latents alone); the AudioLDM family has none (yields False: the sampler blends in the known latent)."""
        yield False

    def _settle(self) -> None:
        """Finish construction: mel frames must divide by the VAE's and the UNet's downsampling, and every module
        starts frozen in eval mode (the stages unfreeze exactly what they train)."""
        vae_down = 2 ** (len(self.vae.config.block_out_channels) - 1)  # type: ignore[attr-defined]
        unet_down = 2 ** (len(self.unet.config.block_out_channels) - 1)  # type: ignore[attr-defined]
        self.frame_multiple = vae_down * unet_down
        for m in self.modules().values():
            m.eval().requires_grad_(False)

    def frames_for(self, num_samples: int) -> int:
        """Mel frames (rounded up to ``frame_multiple``) needed to cover ``num_samples``."""
        hop = self.mel.hop_length
        frames = -(-num_samples // hop)
        m = self.frame_multiple
        return max(m, -(-frames // m) * m)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> AudioModel:
        self.device = torch.device(device)
        if dtype is not None:
            self.dtype = dtype
            self.weight_dtype = None
        for name, module in self.modules().items():
            target = self.storage_dtype(name)
            if any(p.device != self.device or p.dtype != target for p in module.parameters()):
                module.to(self.device, dtype=target)
        if self.weight_dtype not in (None, self.dtype):  # the conditioning's entry layers stay in ``dtype``
            for name in self.conditioning_entries():
                torch.nn.Module.to(self.unet.get_submodule(name), dtype=self.dtype)
        return self

    def modules(self) -> dict[str, nn.Module]:
        """Every torch module the model owns (for moving, freezing and memory accounting)."""
        return {k: v for k, v in vars(self).items() if isinstance(v, nn.Module)}
