"""Edit parameters and their validation.

Pure Python on purpose: the daemon validates jobs on its answering path, where importing torch would cost seconds.
Defaults follow the paper (§3.3) unless noted; every number can be overridden.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from engine.errors import InputError

Mode = Literal["lora", "full", "sdedit", "zeta", "flowedit", "repaint", "cover"]
MODES: tuple[str, ...] = ("lora", "full", "sdedit", "zeta", "flowedit", "repaint", "cover")
# No stages 1-2; ``etas`` are strengths in (0, 1]. ``zeta`` runs on ᾱ-schedule models, ``flowedit`` on flow models
# (each model lists what it can run: ``AudioModel.modes``).
ZERO_SHOT_MODES: tuple[str, ...] = ("sdedit", "zeta", "flowedit", "repaint", "cover")
ZERO_SHOT_LABEL = {"sdedit": "SDEdit", "zeta": "ZETA", "flowedit": "FlowEdit", "repaint": "repaint",
                   "cover": "cover"}
# A model's own edit tasks (ACE-Step's ``task_type``): ``repaint`` regenerates the inpainting range with the model's
# in-context conditioning (strength = start noise level inside it, 1 = from pure noise as the model's pipeline
# does); ``cover`` restyles the whole input (strength = the pipeline's ``audio_cover_strength``).
NATIVE_MODES: tuple[str, ...] = ("repaint", "cover")
# The modes each kind of model runs (``AudioModel.modes``): ᾱ-schedule models have ZETA's edit-friendly inversion,
# flow models FlowEdit instead; the three-stage modes and SDEdit run on both.
DDPM_MODES: tuple[str, ...] = ("lora", "full", "sdedit", "zeta")
FLOW_MODES: tuple[str, ...] = ("lora", "full", "sdedit", "flowedit")
# Flow models with their own repaint and cover tasks (ACE-Step 1.5).
MUSIC_FLOW_MODES: tuple[str, ...] = (*FLOW_MODES, *NATIVE_MODES)
STARTS: tuple[str, ...] = ("noise", "inversion")
ETA_RANGE = (0.0, 1.5)  # η slightly above 1 extrapolates past the target, as in Imagic
MAX_STEPS = 20_000
MAX_SAMPLE_STEPS = 1000  # every model here trains on 1000 timesteps; a sampler cannot take more steps than that
MAX_TAKES = 16
# The paper's stage settings (§3.3) are Adam 2e-3 × 500 steps for the embedding and full fine-tuning 1e-6 × 1500
# (LoRA: the same 1500 steps at 1e-4, since its adapters start at zero). Issue 17 cut the sequential network calls
# of the LoRA edit by the reduction measured on the toy benchmark (docs/quality.md): stage 1 in 2/5 of the steps
# at 2.5× the rate; LoRA with the paper's 1,500 noise draws as 375 steps of 4 draws (one batch each) at 2× the
# rate (4× held Text and kept onsets too but lost more Audio on style transfers). Full fine-tuning keeps the
# paper's numbers (the toy benchmark did not measure it). A model may override any of these
# (``AudioModel.stage_defaults``).
PAPER_STAGE_DEFAULTS: dict[str, Any] = {"embed_steps": 200, "embed_lr": 5e-3, "full_steps": 1500, "full_lr": 1e-6,
                                        "lora_steps": 375, "lora_lr": 2e-4, "full_draws": 1, "lora_draws": 4}
MAX_DRAWS = 64  # noise draws per stage-2 step (one batch): beyond this a step is a memory question, not a speed one


@dataclass(frozen=True)
class Region:
    """The part of the source file to edit, in seconds; ``length=None`` means to the end."""

    start: float = 0.0
    length: float | None = None


@dataclass(frozen=True)
class Inpaint:
    """A time range to regenerate, in seconds relative to the region start; outside it the input is kept."""

    start: float
    end: float


@dataclass(frozen=True)
class EditParams:
    """What to do to the audio. ``etas`` are edit strengths (η), or strengths in (0, 1] in ``sdedit`` / ``zeta`` /
    ``flowedit`` mode. ``start`` picks stage 3's start for the three-stage modes: fresh seeded noise, or the input
    inverted with the tuned model (``engine.inversion``). ``source_prompt`` describes the input for ``zeta`` and
    ``flowedit`` ("" = none)."""

    prompt: str
    etas: tuple[float, ...] = (0.25, 0.5, 0.75)
    mode: Mode = "lora"
    seed: int = 0
    inpaint: Inpaint | None = None
    # Stages 1-2: None means "the model's default" (``AudioModel.stage_defaults``), else the paper's (below).
    embed_steps: int | None = None
    embed_lr: float | None = None
    tune_steps: int | None = None
    tune_lr: float | None = None
    # Stage 2 noise draws per optimiser step (one batch of k (t, ε) pairs): the same draws in k× fewer sequential
    # UNet calls; None = the model's default, else the paper's batch of 1.
    tune_draws: int | None = None
    lora_rank: int = 8
    # Stage 3: sampling. None picks the model's own default.
    sample_steps: int | None = None
    guidance: float | None = None
    sampler: Literal["ddim", "dpm"] = "ddim"
    start: Literal["noise", "inversion"] = "noise"
    source_prompt: str = ""
    # zeta: guidance of the source prompt in the inversion (ZETA's reference code: 3 for the source, 12 for the
    # target; the target's is ``guidance``). Unused without a source prompt.
    source_guidance: float = 3.0

    def resolved(self, model_defaults: Mapping[str, Any] | None = None) -> EditParams:
        """A copy with every unset stage number filled in: the model's own default where it has one (the keys of
        :data:`PAPER_STAGE_DEFAULTS`, plus ``sample_steps`` and ``guidance``), else the paper's. Explicit values
        always win."""
        d = {**PAPER_STAGE_DEFAULTS, **(model_defaults or {})}
        kind = "full" if self.mode == "full" else "lora"
        return replace(
            self,
            embed_steps=self.embed_steps if self.embed_steps is not None else d["embed_steps"],
            embed_lr=self.embed_lr if self.embed_lr is not None else d["embed_lr"],
            tune_steps=self.tune_steps if self.tune_steps is not None else d[f"{kind}_steps"],
            tune_lr=self.tune_lr if self.tune_lr is not None else d[f"{kind}_lr"],
            tune_draws=self.tune_draws if self.tune_draws is not None else d.get(f"{kind}_draws", 1),
            sample_steps=self.sample_steps if self.sample_steps is not None else d.get("sample_steps"),
            guidance=self.guidance if self.guidance is not None else d.get("guidance"))

    def stage_key(self) -> dict[str, Any]:
        """The parameters that determine stages 1-2 (the cache key); stage-3 settings are left out.
        Call it on :meth:`resolved` params so a default and the same value given explicitly share a key."""
        r = self.resolved()
        return {"prompt": r.prompt, "mode": r.mode, "seed": r.seed, "embed_steps": r.embed_steps,
                "embed_lr": r.embed_lr, "tune_steps": r.tune_steps, "tune_lr": r.tune_lr, "tune_draws": r.tune_draws,
                "lora_rank": r.lora_rank}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["etas"] = list(self.etas)
        return d

    def validate(self) -> EditParams:
        """Raise :class:`InputError` naming the first problem; return self so calls chain."""
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise InputError("the prompt is empty: describe what the sound should become")
        if len(self.prompt) > 1000:
            raise InputError(f"the prompt is too long ({len(self.prompt)} characters, at most 1000)")
        if self.mode not in MODES:
            raise InputError(f"unknown mode {self.mode!r}: use one of {', '.join(MODES)}")
        if not self.etas:
            raise InputError("no edit strengths given: pass at least one η")
        if len(self.etas) > MAX_TAKES:
            raise InputError(f"too many edit strengths ({len(self.etas)}, at most {MAX_TAKES})")
        zero_shot = self.mode in ZERO_SHOT_MODES
        lo, hi = (0.0, 1.0) if zero_shot else ETA_RANGE
        name = "strength" if zero_shot else "η"
        for eta in self.etas:
            if not _is_number(eta) or not lo <= eta <= hi:
                raise InputError(f"{name} {eta!r} is outside [{lo:g}, {hi:g}]")
        if zero_shot and any(e <= 0 for e in self.etas):
            label = ZERO_SHOT_LABEL[self.mode]
            raise InputError(f"an {label} strength of 0 changes nothing: use values in (0, 1]")
        if self.start not in STARTS:
            raise InputError(f"unknown start {self.start!r}: use noise or inversion")
        if not isinstance(self.source_prompt, str) or len(self.source_prompt) > 1000:
            raise InputError("the source prompt must be text of at most 1000 characters")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise InputError(f"seed {self.seed!r} must be a whole number ≥ 0")
        r = self.resolved()
        steps, lr = r.tune_steps, r.tune_lr
        _check_steps("embedding steps", r.embed_steps, allow_zero=True)
        _check_steps("fine-tuning steps", steps, allow_zero=True)
        _check_steps("noise draws per fine-tuning step", r.tune_draws, allow_zero=False, high=MAX_DRAWS)
        if self.sample_steps is not None:
            _check_steps("sampling steps", self.sample_steps, allow_zero=False, high=MAX_SAMPLE_STEPS)
        for label, value in (("embedding learning rate", r.embed_lr), ("fine-tuning learning rate", lr)):
            if not _is_number(value) or not 0 < value <= 1:
                raise InputError(f"{label} {value!r} must be in (0, 1]")
        if not isinstance(self.lora_rank, int) or not 1 <= self.lora_rank <= 256:
            raise InputError(f"LoRA rank {self.lora_rank!r} must be between 1 and 256")
        if self.guidance is not None and (not _is_number(self.guidance) or not 0 <= self.guidance <= 50):
            raise InputError(f"guidance {self.guidance!r} must be between 0 and 50")
        if not _is_number(self.source_guidance) or not 0 <= self.source_guidance <= 50:
            raise InputError(f"source guidance {self.source_guidance!r} must be between 0 and 50")
        if self.sampler not in ("ddim", "dpm"):
            raise InputError(f"unknown sampler {self.sampler!r}: use ddim or dpm")
        if self.inpaint is not None:
            a, b = self.inpaint.start, self.inpaint.end
            if not (_is_number(a) and _is_number(b)) or a < 0 or b <= a:
                raise InputError(f"inpaint range {a!r}:{b!r} is empty or negative")
        elif self.mode == "repaint":
            raise InputError("repaint regenerates a time range: give one (--inpaint START:END, the job's inpaint)")
        return self

    def with_(self, **changes: Any) -> EditParams:
        return replace(self, **changes)


MUSIC_FIELDS: tuple[str, ...] = ("lyrics", "bpm", "key", "time_signature", "language")
MAX_LYRICS = 4096
BPM_RANGE = (20.0, 300.0)
TIME_SIGNATURE_DENOMINATORS = (1, 2, 4, 8, 16, 32)


@dataclass(frozen=True)
class MusicContext:
    """What the song around the edited item is: optional, and used only by models that take it (a model lists the
    fields it uses, ``engine.models.catalog.takes_of``; the others are ignored with a note on the result).

    ``time_signature`` is ``"N/D"`` (beats per bar / note value: ``"4/4"``, ``"6/8"``); ``key`` is free text such as
    ``"C major"`` or ``"F# minor"``; ``language`` is a language code of the lyrics (``"en"``)."""

    lyrics: str | None = None
    bpm: float | None = None
    key: str | None = None
    time_signature: str | None = None
    language: str | None = None

    def given(self) -> tuple[str, ...]:
        """The fields that are set, in :data:`MUSIC_FIELDS` order."""
        return tuple(f for f in MUSIC_FIELDS if getattr(self, f) is not None)

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set (what sidecars record and the stage cache keys on)."""
        return {f: getattr(self, f) for f in self.given()}

    def beats_per_bar(self) -> int | None:
        """N of ``"N/D"``, or None."""
        return None if self.time_signature is None else int(self.time_signature.split("/")[0])

    def validate(self) -> MusicContext:
        """Raise :class:`InputError` naming the first bad field (the ranges of docs/protocol.md); return self."""
        if self.lyrics is not None and (not isinstance(self.lyrics, str) or len(self.lyrics) > MAX_LYRICS):
            raise InputError(f"lyrics must be text of at most {MAX_LYRICS} characters")
        lo, hi = BPM_RANGE
        if self.bpm is not None and (not _is_number(self.bpm) or not lo <= self.bpm <= hi):
            raise InputError(f"bpm {self.bpm!r} must be a number between {lo:g} and {hi:g}")
        if self.key is not None and (not isinstance(self.key, str) or not self.key.strip() or len(self.key) > 32):
            raise InputError(f"key {self.key!r} must be text of 1 to 32 characters, such as \"C major\"")
        if self.time_signature is not None and not _time_signature_ok(self.time_signature):
            raise InputError(f"time signature {self.time_signature!r} must be N/D with N 1-32 and D one of "
                             f"{', '.join(map(str, TIME_SIGNATURE_DENOMINATORS))} (\"4/4\", \"6/8\")")
        if self.language is not None and (not isinstance(self.language, str) or not self.language.strip()
                                          or len(self.language) > 16):
            raise InputError(f"language {self.language!r} must be a code of 1 to 16 characters, such as \"en\"")
        return self


def _time_signature_ok(text: object) -> bool:
    if not isinstance(text, str):
        return False
    parts = text.strip().split("/")
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts):
        return False
    n, d = int(parts[0]), int(parts[1])
    return 1 <= n <= 32 and d in TIME_SIGNATURE_DENOMINATORS


@dataclass(frozen=True)
class EditRequest:
    """One edit: which audio, which part of it, what to do, and (optionally) the song it sits in."""

    source: str
    region: Region = field(default_factory=Region)
    params: EditParams = field(default_factory=lambda: EditParams(prompt=""))
    music: MusicContext = field(default_factory=MusicContext)

    def validate(self) -> EditRequest:
        r = self.region
        if not _is_number(r.start) or r.start < 0:
            raise InputError(f"region start {r.start!r} must be ≥ 0 seconds")
        if r.length is not None and (not _is_number(r.length) or r.length <= 0):
            raise InputError(f"region length {r.length!r} must be > 0 seconds")
        self.params.validate()
        self.music.validate()
        return self


def _is_number(x: object) -> bool:
    """A finite real number; an integer too large for a float (400 digits) is not one (no OverflowError)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def _check_steps(label: str, value: object, *, allow_zero: bool, high: int = MAX_STEPS) -> None:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"{label} {value!r} must be a whole number between {low} and {high}")
