"""The models aiedit knows by name: pure data, imported by the registry (loading) and the inventory (what is on
disk) alike, so neither imports the other.

Stable Audio 3 facts and their sources:
- hub ids ``stabilityai/stable-audio-3-medium`` (1.4 B DiT + SAME-L, up to 380 s), ``-small-sfx`` and
  ``-small-music`` (433 M DiT + SAME-S, up to 120 s): the Stability-AI/stable-audio-3 README's model table and the
  Hugging Face model cards (the ``stable-audio-3`` collection). No plain ``stable-audio-3-small`` repo exists; the
  small model comes as two specialisations, so ``sa3-small`` names the sound-effects one (aiedit edits sounds and
  music alike; ``sa3-small-music`` names the other).
- licence: the model cards' ``license: other`` / ``stable-audio-community`` — the Stability AI Community License
  (https://stability.ai/license): free for individuals and organisations under US$1M annual revenue, an enterprise
  licence above. The three repos are gated: the licence is accepted on each model page, and the text encoder is
  Google's T5Gemma, so Gemma's terms of use apply too.
- layout: the hub checkpoints are in stable-audio-tools form (``model.safetensors`` + ``model_config.json``), not
  diffusers' (diffusers' SA3 docs: "not published in diffusers format, so convert them locally" with
  ``scripts/convert_stable_audio_3_to_diffusers.py`` from the diffusers repository). aiedit loads the converted
  folder; ``aiedit models pull`` fetches the checkpoint and prints the conversion command.
- not found: the GPU memory each needs beyond the issue's figures (1.7-6.5 GB for 8-step sampling on an H200); the
  doctor's thresholds below are those figures plus headroom for stage-2 fine-tuning, marked as estimates.
"""

from __future__ import annotations

import os
from pathlib import Path

SA3 = "stable-audio-3"

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
}
# Gated repositories: what the user must accept before a download can work (shown by ``aiedit models pull``).
GATED: dict[str, str] = {
    repo: ("the Stability AI Community License (free under US$1M annual revenue, an enterprise licence above: "
           "https://stability.ai/license) and, for its T5Gemma text encoder, Gemma's terms of use")
    for fam, repo in ALIASES.values() if fam == SA3
}
# Free GPU memory (GiB) to run each SA3 size comfortably: 8-step sampling needs 1.7-6.5 GB on an H200 (the issue's
# figures from Stability's report); LoRA fine-tuning holds activations and Adam state besides. Estimates.
SA3_GPU_GIB: dict[str, float] = {"sa3-small": 4.0, "sa3-small-music": 4.0, "sa3-medium": 12.0}

# The longest clip each SA3 size makes in one pass (the Stability-AI/stable-audio-3 README's model table, "Max
# length": Small 120 s, Medium 380 s; its model overview says "~2min" and "~4.75min"). The editor cuts windows only
# beyond it. Keyed by size: a converted folder says its size through its DiT (stable_audio3.sa3_max_seconds).
SA3_MAX_SECONDS: dict[str, float] = {"small": 120.0, "medium": 380.0}

BUILTIN = ("tiny", "tiny-sa3")
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
SHIPPED_CLAP: dict[str, Path] = {"toy": WEIGHTS_DIR / "toy_clap", "toy-flow": WEIGHTS_DIR / "toy_clap"}
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
                     "StableAudio3AudioToAudioPipeline": SA3, "StableAudio3InpaintPipeline": SA3}


FLOW_FAMILIES = (SA3, "tiny-sa3")


def modes_of_family(family: str) -> tuple[str, ...]:
    """The edit modes a family runs, known without loading it (the daemon advertises them before the model loads;
    the loaded model's ``AudioModel.modes`` says the same)."""
    from engine.params import DDPM_MODES, FLOW_MODES

    return FLOW_MODES if family in FLOW_FAMILIES else DDPM_MODES


def family_of_hub_id(repo: str) -> str | None:
    low = repo.lower()
    if "stable-audio-3" in low:
        return SA3
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
