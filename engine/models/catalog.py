"""The models aiedit knows by name: pure data, imported by the registry (loading) and the inventory (what is on
disk) alike, so neither imports the other.

Stable Audio 3 facts and their sources:
- hub ids ``stabilityai/stable-audio-3-medium`` (1.4 B DiT + SAME-L, up to 380 s), ``-small-sfx`` and
  ``-small-music`` (433 M DiT + SAME-S, up to 120 s): the Stability-AI/stable-audio-3 README's model table and the
  Hugging Face model cards (the ``stable-audio-3`` collection). No plain ``stable-audio-3-small`` repo exists; the
  small model comes as two specialisations, so ``sa3-small`` names the sound-effects one (aiedit edits sounds and
  music alike; ``sa3-small-music`` names the other). ``-medium-base`` is the undistilled medium model (Euler, 100
  steps; Stability-AI/stable-audio-3 ``model_configs.py`` lists it beside the distilled ones).
- licence: the model cards' ``license: other`` / ``stable-audio-community`` — the Stability AI Community License
  (https://stability.ai/license): free for individuals and organisations under US$1M annual revenue, an enterprise
  licence above. The three repos are gated: the licence is accepted on each model page, and the text encoder is
  Google's T5Gemma, so Gemma's terms of use apply too.
- layout: the hub checkpoints are in stable-audio-tools form (``model.safetensors`` + ``model_config.json``), not
  diffusers' (diffusers' SA3 docs: "not published in diffusers format, so convert them locally" with
  ``scripts/convert_stable_audio_3_to_diffusers.py`` from the diffusers repository). aiedit loads the converted
  folder; ``aiedit models pull`` fetches the checkpoint and the T5Gemma text encoder and converts them with its own
  converter (engine/models/convert_sa3.py); ``--from DIR`` converts a checkpoint copied by hand.
- not found: the GPU memory each needs beyond the issue's figures (1.7-6.5 GB for 8-step sampling on an H200); the
  doctor's thresholds below are those figures plus headroom for stage-2 fine-tuning, marked as estimates.

ACE-Step 1.5 facts and their sources:
- hub ids: ``ACE-Step/Ace-Step1.5`` holds the turbo DiT (``acestep-v15-turbo/``) with the parts every DiT shares
  (``vae/``, ``Qwen3-Embedding-0.6B/``; also the 5 Hz planner LM ``acestep-5Hz-lm-1.7B/``, which aiedit does not use
  and does not pull); ``ACE-Step/acestep-v15-sft`` and ``ACE-Step/acestep-v15-base`` hold one DiT each at the
  repository's root — the ACE-Step-1.5 README's "Available Models" table and its ``huggingface-cli download``
  lines; diffusers' ACE-Step docs (``api/pipelines/ace_step.md``) name the same three repositories per variant.
- licence: MIT (the ACE-Step-1.5 repository's LICENSE and README "License & Disclaimer"; the model cards'
  ``license: mit``); ungated, so ``aiedit models pull`` fetches them in one command.
- sizes: the DiTs are the "2B" models of the README's GPU table; each DiT folder's ``model.safetensors`` ≈ 4.7 GB
  of bf16 (DiT + condition encoder + 5 Hz audio tokenizer: 2,394 M parameters built at real size by
  benchmarks/gpu.py), ``vae/`` 337 MB (bf16 AutoencoderOobleck, 168.7 M), ``Qwen3-Embedding-0.6B/`` 1.2 GB (bf16,
  0.6 B) — ACE-Step's model downloader listing ("DiT ~4.7 GB") and the hub's file sizes.
- memory: the README says the DiT runs in under 4 GB of VRAM with CPU offload and INT8; its GPU table puts the 2B
  turbo/sft at 8-16 GB without offload. aiedit keeps every part on the GPU in bf16 (≈ 6.3 GB of weights) and trains
  LoRA adapters besides, so the doctor's threshold below is an estimate: ≈ 10 GiB.
- sampling per variant: turbo 8 steps without guidance; sft and base 50 steps with guidance (the README's model
  zoo). The maintainers advise sft for repaint; users report dropped vocals and rough seams repainting on turbo
  (ACE-Step-1.5 issue 1151): aiedit's repaint on turbo carries a note saying so.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

SA3 = "stable-audio-3"
ACE = "ace-step"
ACE_MAIN = "ACE-Step/Ace-Step1.5"  # the turbo DiT and the shared VAE and text encoder

ALIASES: dict[str, tuple[str, str]] = {
    "audioldm": ("audioldm", "cvssp/audioldm-s-full-v2"),
    "audioldm-m": ("audioldm", "cvssp/audioldm-m-full"),
    "audioldm-l": ("audioldm", "cvssp/audioldm-l-full"),
    "audioldm2": ("audioldm2", "cvssp/audioldm2"),
    "audioldm2-music": ("audioldm2", "cvssp/audioldm2-music"),
    "audioldm2-large": ("audioldm2", "cvssp/audioldm2-large"),
    "tango": ("tango", "declare-lab/tango"),
    "tango-full": ("tango", "declare-lab/tango-full"),
    "tango2": ("tango", "declare-lab/tango2"),
    "tango2-full": ("tango", "declare-lab/tango2-full"),
    "sa3-small": (SA3, "stabilityai/stable-audio-3-small-sfx"),
    "sa3-small-music": (SA3, "stabilityai/stable-audio-3-small-music"),
    "sa3-medium": (SA3, "stabilityai/stable-audio-3-medium"),
    "sa3-medium-base": (SA3, "stabilityai/stable-audio-3-medium-base"),
    "ace-step": (ACE, ACE_MAIN),
    "ace-step-sft": (ACE, "ACE-Step/acestep-v15-sft"),
    "ace-step-base": (ACE, "ACE-Step/acestep-v15-base"),
}
# SA3's text encoder: not inside the checkpoint (the reference conditioner keeps it out of its state dict), fetched
# beside it and copied into the converted folder (engine/models/convert_sa3.py).
T5GEMMA = "google/t5gemma-b-b-ul2"
# Where each ACE-Step alias's DiT sits in its repository ("" = the root); the VAE and text encoder come from
# ACE_MAIN (ACE_SHARED) whatever the DiT.
ACE_DIT_FOLDER: dict[str, str] = {"ace-step": "acestep-v15-turbo", "ace-step-sft": "", "ace-step-base": ""}
ACE_SHARED = ("vae", "Qwen3-Embedding-0.6B")
ACE_VARIANT: dict[str, str] = {"ace-step": "turbo", "ace-step-sft": "sft", "ace-step-base": "base"}
# Download sizes (GB) of what `models pull` fetches per alias: its DiT and the shared parts (1.5 GB, fetched once).
ACE_PULL_GB: dict[str, float] = {"ace-step": 4.7 + 1.5, "ace-step-sft": 4.7 + 1.5, "ace-step-base": 4.7 + 1.5}
LICENCES: dict[str, str] = {alias: "MIT (ungated)" for alias, (fam, _) in ALIASES.items() if fam == ACE}
# Gated repositories: what the user must accept before a download can work (shown by ``aiedit models pull``).
GATED: dict[str, str] = {
    repo: ("the Stability AI Community License (free under US$1M annual revenue, an enterprise licence above: "
           "https://stability.ai/license) and, for its T5Gemma text encoder, Gemma's terms of use")
    for fam, repo in ALIASES.values() if fam == SA3
}
GATED[T5GEMMA] = "Gemma's terms of use (https://ai.google.dev/gemma/terms)"
# Free GPU memory (GiB) to run each SA3 size comfortably: 8-step sampling needs 1.7-6.5 GB on an H200 (the issue's
# figures from Stability's report); LoRA fine-tuning holds activations and Adam state besides. Estimates.
SA3_GPU_GIB: dict[str, float] = {"sa3-small": 4.0, "sa3-small-music": 4.0, "sa3-medium": 12.0,
                                  "sa3-medium-base": 12.0}
# The same for ACE-Step 1.5 (the 2B DiTs): ≈ 6.3 GB of bf16 weights plus LoRA training; an estimate (see above).
ACE_GPU_GIB: dict[str, float] = {"ace-step": 10.0, "ace-step-sft": 10.0, "ace-step-base": 10.0}
# What one loaded model holds (GiB of fp32 weights: parameters x 4 bytes), by name, else by family: how many models
# a daemon's worker keeps loaded by default (`aiedit serve --max-models`, bridge/workers/loaded.py). Estimates from
# parameter counts, rounded up: AudioLDM s / m / l UNets 185 / 416 / 739 M plus CLAP, VAE and vocoder; AudioLDM 2
# 350 M (large 750 M) UNet plus GPT-2 and FLAN-T5 encoders; TANGO 866 M UNet plus FLAN-T5-large's encoder
# (/work/shared/notes/gpu.md); SA3 small 433 M / medium 1.4 B DiT plus SAME and T5Gemma; ACE-Step 2,394 M DiT
# parts + 169 M VAE + 0.6 B Qwen3 (above). On a CUDA GPU the weights are stored in bf16 (--precision auto): half.
WEIGHTS_GIB: dict[str, float] = {"audioldm": 1.8, "audioldm-m": 2.7, "audioldm-l": 4.0, "audioldm2": 4.5,
                                 "audioldm2-music": 4.5, "audioldm2-large": 6.0, "tango": 5.0, SA3: 3.5,
                                 "sa3-medium": 8.0, ACE: 12.0, "tiny": 0.05, "tiny-sa3": 0.05, "tiny-ace": 0.05,
                                 "toy": 0.05, "toy-flow": 0.05}
# What one edit needs beside the weights (activations, LoRA adapters and Adam state, the decoded audio): TANGO's
# measured LoRA peak of 9.8 GiB on an H100 less its ≈ 5 GiB of weights; the toy-sized models need little.
EDIT_GIB, TOY_EDIT_GIB = 5.0, 0.5

# Peak GPU memory of one LoRA edit of a real-size TANGO, fp32 (NVIDIA H100, measured: /work/shared/notes/gpu.md,
# the doctor's MODE_GIB["lora"]). AudioLDM / AudioLDM 2 have no measured figure: they are not recommended by size.
TANGO_GPU_GIB: dict[str, float] = {a: 11.0 for a, (fam, _) in ALIASES.items() if fam == "tango"}


def memory_gib(name: str) -> float | None:
    """Memory (GiB) one edit of a model needs, from every ``*_GPU_GIB`` table here (SA3_GPU_GIB, ACE_GPU_GIB,
    TANGO_GPU_GIB, and any family's added later), or None when no figure is known."""
    for key, table in globals().items():
        if key.endswith("_GPU_GIB") and isinstance(table, dict) and name in table:
            return float(table[name])
    return None

# The longest clip each SA3 size makes in one pass (the Stability-AI/stable-audio-3 README's model table, "Max
# length": Small 120 s, Medium 380 s; its model overview says "~2min" and "~4.75min"). The editor cuts windows only
# beyond it. Keyed by size: a converted folder says its size through its DiT (stable_audio3.sa3_max_seconds).
SA3_MAX_SECONDS: dict[str, float] = {"small": 120.0, "medium": 380.0}

BUILTIN = ("tiny", "tiny-sa3", "tiny-ace")
AUTO = "auto"
# Models shipped in the repo (diffusers layout under engine/weights/), trained here on the toy world: ``toy`` (AudioLDM,
# 16 kHz mono) by ``python -m toyworld.train``, ``toy-flow`` (Stable Audio 3's classes, 44.1 kHz stereo) by
# ``python -m toyworld.train_flow``.
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
SHIPPED: dict[str, tuple[str, Path]] = {"toy": ("audioldm", WEIGHTS_DIR / "toy"),
                                        "toy-flow": (SA3, WEIGHTS_DIR / "toy_flow")}
SHIPPED_TRAIN: dict[str, str] = {"toy": "python -m toyworld.train", "toy-flow": "python -m toyworld.train_flow"}
# Their own CLAP scorers (a folder ``ClapScorer.load`` reads) and the edit defaults that suit them. Both score with
# the toy CLAP (16 kHz mono: the scorer averages the channels and resamples).
SHIPPED_CLAP: dict[str, Path] = {"toy": WEIGHTS_DIR / "toy_clap", "toy-flow": WEIGHTS_DIR / "toy_flow_clap"}
# The toy model's stage settings were swept on held-out clips (docs/quality.md): the paper's rates are tuned for
# models 100-1000× larger and move this one too little in 300 steps (full at 1e-6).
# Issue 17: stage 1 100 @ 1e-2 → 40 @ 2.5e-2 and LoRA 300 @ 3e-3 → 75 steps × 4 noise draws @ 6e-3 (same draws
# in a quarter of the calls), measured on the toy benchmark against the old settings (docs/quality.md).
# The toy flow model keeps the settings its benchmark ran with (the toy model's before issue 17, unswept for it),
# plain Euler steps and classifier-free guidance (it was trained with 10 % empty prompts; it is not distilled).
SHIPPED_DEFAULTS: dict[str, dict] = {
    "toy": {"max_seconds": 2.56, "default_steps": 30, "default_guidance": 2.5,
            "stage_defaults": {"embed_steps": 40, "embed_lr": 2.5e-2, "full_steps": 300, "full_lr": 5e-5,
                               "lora_steps": 75, "lora_lr": 6e-3, "lora_draws": 4}},
    "toy-flow": {"max_seconds": 2.56, "default_steps": 20, "default_guidance": 3.0,
                 "stage_defaults": {"embed_steps": 100, "embed_lr": 1e-2, "full_steps": 300, "full_lr": 5e-5,
                                    "lora_steps": 300, "lora_lr": 3e-3, "lora_draws": 1}},
}

# model_index.json ``_class_name`` → family.
PIPELINE_FAMILIES = {"AudioLDM2Pipeline": "audioldm2", "AudioLDMPipeline": "audioldm", "StableAudio3Pipeline": SA3,
                     "StableAudio3AudioToAudioPipeline": SA3, "StableAudio3InpaintPipeline": SA3,
                     "AceStepPipeline": ACE}


FLOW_FAMILIES = (SA3, "tiny-sa3")
MUSIC_FAMILIES = (ACE, "tiny-ace")  # flow models with their own repaint and cover


# Default strengths of the zero-shot modes on Stable Audio 3 when a request names none (the CLI; a protocol job always
# names its own). The ᾱ-schedule defaults 0.25 / 0.5 / 0.75 are near-copies there: on toy-flow (SA3's classes) FlowEdit
# moved the latent 5 % / 9 % / 18 % of the way to a fresh generation and SDEdit 10 % / 40 % / 70 %. These move
# 18 / 26 / 44 % (FlowEdit, its Text peaks at 0.85 and falls at 1) and 19 / 52 / 76 % (SDEdit), measured by
# benchmarks/flow_choices.py (docs/performance.md, "Flow-model default strengths"). Stability's own audio-to-audio
# example uses 0.9 on the distilled medium model. ACE-Step keeps the general defaults (not measured on it).
FLOW_STRENGTHS: dict[str, tuple[float, ...]] = {"flowedit": (0.75, 0.85, 0.95), "sdedit": (0.4, 0.55, 0.7)}
DEFAULT_ETAS: tuple[float, ...] = (0.25, 0.5, 0.75)


def default_etas(family: str, mode: str) -> tuple[float, ...]:
    """The η / strengths a request gets when it names none."""
    if family in FLOW_FAMILIES and mode in FLOW_STRENGTHS:
        return FLOW_STRENGTHS[mode]
    return DEFAULT_ETAS


def strengths_of(family: str, modes: Iterable[str]) -> dict[str, list[float]]:
    """``{mode: default strengths}`` for each of ``modes`` (daemon.json's ``strengths``): a client's dialog offers
    these, since a protocol job always names its own and the general ones are near-copies on flow models."""
    return {m: list(default_etas(family, m)) for m in modes}


def modes_of_family(family: str) -> tuple[str, ...]:
    """The edit modes a family runs, known without loading it (the daemon advertises them before the model loads;
    the loaded model's ``AudioModel.modes`` says the same)."""
    from engine.params import DDPM_MODES, FLOW_MODES, MUSIC_FLOW_MODES

    if family in MUSIC_FAMILIES:
        return MUSIC_FLOW_MODES
    return FLOW_MODES if family in FLOW_FAMILIES else DDPM_MODES


# What each model is for, as the REAPER dialog shows it: "music", "sound effects", or "general" (both). By name
# first (a family's checkpoints may differ: SA3 small comes as sfx and music), else by family. Sources: the model
# cards — SA3 small-sfx / small-music are the specialisations of the small model, medium (and medium-base) the
# general one; AudioLDM 2 music is the music-only checkpoint; TANGO is trained on AudioCaps (sound events); AudioLDM
# and AudioLDM 2 on sound, music and speech; ACE-Step makes songs; the toy models know the toy world's sound events.
KIND_OF_NAME: dict[str, str] = {"sa3-small": "sound effects", "sa3-small-music": "music", "sa3-medium": "general",
                                "audioldm2-music": "music", "toy": "sound effects", "toy-flow": "sound effects"}
KIND_OF_FAMILY: dict[str, str] = {ACE: "music", "tiny-ace": "music", "tango": "sound effects", SA3: "general",
                                  "audioldm": "general", "audioldm2": "general", "tiny": "general",
                                  "tiny-sa3": "general"}
KINDS = ("music", "sound effects", "general")


def family_of_name(name: str) -> str | None:
    """The family of a model name aiedit knows (alias, shipped or built in), else None."""
    if name in ALIASES:
        return ALIASES[name][0]
    if name in SHIPPED:
        return SHIPPED[name][0]
    return name if name in BUILTIN else None


def kind_of(name: str, family: str | None = None) -> str:
    """"music", "sound effects" or "general" for a model name (or a folder of a known family)."""
    if name in KIND_OF_NAME:
        return KIND_OF_NAME[name]
    return KIND_OF_FAMILY.get(family or family_of_name(name) or "", "general")


def takes_of(family: str | None) -> tuple[str, ...]:
    """The musical-context fields a family's conditioning uses (the loaded model's ``AudioModel.takes``)."""
    from engine.params import MUSIC_FIELDS

    return MUSIC_FIELDS if family in MUSIC_FAMILIES else ()


def describe(name: str, family: str | None = None) -> dict:
    """``{"name", "kind", "modes", "takes", "strengths"}`` of a model, without torch or loading it: what the daemon
    lists in ``daemon.json``'s ``models``. ``family`` is needed only for a folder (``registry.resolve(spec).family``).
    """
    fam = family or family_of_name(name) or ""
    modes = modes_of_family(fam)
    return {"name": name, "kind": kind_of(name, fam), "modes": list(modes), "takes": list(takes_of(fam)),
            "strengths": strengths_of(fam, modes)}


def resident_gib(name: str, family: str | None = None, *, gpu: bool = False, precision: str = "auto") -> float:
    """GiB a loaded model holds (:data:`WEIGHTS_GIB`; bf16 on a CUDA GPU unless ``precision`` is fp32). An unknown
    folder counts as the largest known model: too few models loaded costs a reload, too many an out-of-memory."""
    fam = family or family_of_name(name) or ""
    fp32 = WEIGHTS_GIB.get(name, WEIGHTS_GIB.get(fam, max(WEIGHTS_GIB.values())))
    return fp32 / 2 if gpu and precision != "fp32" else fp32


def edit_gib(name: str, family: str | None = None, *, gpu: bool = False, precision: str = "auto") -> float:
    """GiB one LoRA edit on a model needs in all, its weights included: the doctor's GPU figures where there are
    some (:data:`SA3_GPU_GIB`, :data:`ACE_GPU_GIB`), else the weights plus :data:`EDIT_GIB`."""
    known = {**SA3_GPU_GIB, **ACE_GPU_GIB}
    if gpu and name in known:
        return known[name]
    weights = resident_gib(name, family, gpu=gpu, precision=precision)
    toy = name in BUILTIN or name in SHIPPED
    return weights + (TOY_EDIT_GIB if toy else EDIT_GIB)


def family_of_hub_id(repo: str) -> str | None:
    low = repo.lower()
    if "stable-audio-3" in low:
        return SA3
    if "ace-step" in low or "acestep" in low:
        return ACE
    if "audioldm2" in low:
        return "audioldm2"
    if "tango" in low:
        return "tango"
    if "audioldm" in low:
        return "audioldm"
    return None


def converted_home() -> Path:
    """Where converted (diffusers-layout) Stable Audio 3 folders live: ``$AIEDIT_MODELS_HOME``, else
    ``~/.cache/aiedit/models``; one subfolder per alias (``sa3-medium/``)."""
    explicit = os.environ.get("AIEDIT_MODELS_HOME")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "aiedit" / "models"
