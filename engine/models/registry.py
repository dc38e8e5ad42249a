"""Model names → loaders. Offline by default: a missing model fails at once with how to get it, never hangs.

A spec is ``auto`` (the best real model on this machine, else the shipped toy model: engine/models/inventory.py),
a short name (``tiny``, ``tiny-sa3``, ``tiny-ace``, ``audioldm``, ``audioldm2``, ``tango``, ``sa3-small``,
``sa3-medium``, ``ace-step``…), a hub id (``cvssp/audioldm2``), or a local folder (diffusers layout with
``model_index.json``, TANGO's snapshot layout with ``main_config.json``, or an ACE-Step DiT folder with ``vae/`` and
``Qwen3-Embedding-0.6B/`` beside it). Stable Audio 3 loads from a converted diffusers folder only; ACE-Step from
its hub snapshots as published (engine/models/catalog.py).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InputError, ModelUnavailable
from engine.models.catalog import (
    ACE,
    ALIASES,
    AUTO,
    BUILTIN,
    PIPELINE_FAMILIES,
    SA3,
    SHIPPED,
    SHIPPED_CLAP,
    SHIPPED_DEFAULTS,
    SHIPPED_TRAIN,
    WEIGHTS_DIR,
    converted_home,
    family_of_hub_id,
)

# The names themselves live in engine/models/catalog.py (shared with the inventory); re-exported here.
__all__ = ["ALIASES", "AUTO", "BUILTIN", "SHIPPED", "SHIPPED_CLAP", "SHIPPED_DEFAULTS", "WEIGHTS_DIR", "ModelSpec",
           "load_model", "load_scorer_for", "resolve", "resolve_auto"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSpec:
    family: str  # "tiny" | "tiny-sa3" | "tiny-ace" | "audioldm" | "audioldm2" | "tango" | "stable-audio-3" | "ace-step"
    source: str  # hub id or folder
    name: str  # what results and caches call it


def resolve(spec: str) -> ModelSpec:
    """Decide what a model spec means without loading anything (cheap; used to validate early)."""
    s = spec.strip()
    if s == AUTO:
        return resolve(resolve_auto()[0])
    if s in BUILTIN:
        return ModelSpec(s, s, s)
    if s in SHIPPED:
        family, folder = SHIPPED[s]
        if not (folder / "model_index.json").exists():
            raise ModelUnavailable(f"the {s} model is missing from {folder}: train it with "
                                   f"`{SHIPPED_TRAIN[s]} --out {folder}`")
        return ModelSpec(family, str(folder), s)
    if s in ALIASES:
        family, hub = ALIASES[s]
        if family == SA3:
            folder = sa3_folder(s)
            return ModelSpec(family, str(folder) if folder else hub, s)
        if family == ACE:
            from engine.models.inventory import ace_paths

            paths = ace_paths(s)
            return ModelSpec(family, str(paths[0]) if paths else hub, s)
        return ModelSpec(family, hub, s)
    path = Path(os.path.expanduser(s))
    if path.is_dir():
        return ModelSpec(_family_of_folder(path), str(path.resolve()), path.resolve().name)
    if _HUB_ID.match(s) and not s.startswith(("/", ".")):
        family = family_of_hub_id(s)
        alias = next((k for k, (f, repo) in ALIASES.items() if f in (SA3, ACE) and repo == s), None)
        if alias is not None:  # SA3 / ACE-Step by hub id: the same folders as its alias
            return resolve(alias)
        if family is None:
            raise InputError(f"cannot tell which model family {s!r} is: name a folder or one of "
                             f"{', '.join((AUTO, *BUILTIN, *SHIPPED, *ALIASES))}")
        return ModelSpec(family, s, s)
    if "/" in s or s.startswith("."):
        raise ModelUnavailable(f"model folder not found: {s}")
    raise InputError(f"unknown model {s!r}: use one of {', '.join((AUTO, *BUILTIN, *SHIPPED, *ALIASES))}, a hub id "
                     "or a folder")


def resolve_auto() -> tuple[str, str | None]:
    """What ``auto`` stands for here and the warning to show (only when it falls back to the toy model)."""
    from engine.models.inventory import resolve_auto as pick

    return pick()


def sa3_folder(alias: str) -> Path | None:
    """The converted (diffusers-layout) folder of a Stable Audio 3 alias: ``<model folder>/<alias>`` in a configured
    model folder, else ``converted_home()/<alias>``; None when not converted yet."""
    from engine.models.inventory import model_dirs

    for base in (*model_dirs(), converted_home()):
        cand = base / alias
        if (cand / "model_index.json").is_file():
            return cand
    return None


def _family_of_folder(path: Path) -> str:
    index = path / "model_index.json"
    if index.exists():
        cls = json.loads(index.read_text()).get("_class_name", "")
        if cls in PIPELINE_FAMILIES:
            return PIPELINE_FAMILIES[cls]
        raise ModelUnavailable(f"{path} holds a {cls or 'unknown'} pipeline, not AudioLDM, AudioLDM 2, TANGO, "
                               "Stable Audio 3 or ACE-Step")
    if (path / "main_config.json").exists() and (path / "vae_config.json").exists():
        return "tango"
    from engine.models.inventory import ace_dit_ok

    if ace_dit_ok(path):
        return ACE
    if (path / "model_config.json").is_file() and (path / "model.safetensors").is_file():
        raise ModelUnavailable(f"{path} is a Stable Audio 3 checkpoint in stable-audio-tools layout: convert it with "
                               f"`aiedit models pull sa3-small --from {path}` (or sa3-small-music, sa3-medium, "
                               "sa3-medium-base: the model it is), then use --model with that name")
    raise ModelUnavailable(f"{path} is not a model folder: expected model_index.json (AudioLDM, AudioLDM 2, Stable "
                           "Audio 3) or main_config.json + vae_config.json (TANGO)")


def _missing(spec: ModelSpec, exc: BaseException) -> ModelUnavailable:
    if spec.family == SA3 and not Path(spec.source).is_dir():
        return ModelUnavailable(
            f"{spec.name} ({spec.source}, gated) is not converted on this machine: run `aiedit models pull "
            f"{spec.name}` (it explains the licence, fetches and converts; `--from DIR` converts a copied "
            "checkpoint) or pass --model /path/to/converted/folder")
    if spec.family == ACE and not Path(spec.source).is_dir():
        return ModelUnavailable(
            f"{spec.name} ({spec.source}, MIT, ungated) is not on this machine: run `aiedit models pull {spec.name}` "
            "(or copy its hub-cache folders here), or pass --model /path/to/folder")
    if Path(spec.source).is_dir():
        return ModelUnavailable(f"cannot load the model in {spec.source}: {str(exc).splitlines()[0][:200]}")
    return ModelUnavailable(
        f"the weights of {spec.source} are not on this machine: on a connected machine run "
        f"`hf download {spec.source}` (or `aiedit models pull {spec.name}`) and copy the cache here, or pass "
        "--model /path/to/folder")


def load_model(spec_text: str, *, device: str = "cpu", allow_download: bool = False, precision: str = "auto",
               compile_unet: bool = False):
    """Load and move a model; raises InputError (unknown name) or ModelUnavailable (weights missing/broken).

    ``precision`` (``engine.precision``): auto = bf16 weight storage on CUDA GPUs that support it, fp32 elsewhere.
    """
    import torch

    from engine import precision as prec

    prec.resolve(precision, device)  # an unknown name fails before anything loads

    if spec_text.strip() == AUTO:
        import logging

        picked, warning = resolve_auto()  # one scan of the disk; ``resolve`` would scan again
        spec = resolve(picked)
        if warning:
            logging.getLogger("aiedit.engine").warning(warning)
        else:
            logging.getLogger("aiedit.engine").info("model auto: %s (%s)", spec.name, spec.source)
    else:
        spec = resolve(spec_text)
    local_only = not allow_download
    # float32 everywhere: stages 1-2 train with Adam, which is unreliable on half-precision weights.
    dtype = torch.float32
    try:
        if spec.family == "tiny":
            from engine.models.audioldm import tiny_audioldm

            model = tiny_audioldm()
        elif spec.family == "tiny-sa3":
            from engine.models.stable_audio3 import tiny_stable_audio3

            model = tiny_stable_audio3()
        elif spec.family == "tiny-ace":
            from engine.models.ace_step import tiny_ace_step

            model = tiny_ace_step()
        elif spec.family == ACE:
            if not Path(spec.source).is_dir():
                raise FileNotFoundError(spec.source)
            from engine.models.ace_step import load_ace_step
            from engine.models.inventory import ace_paths

            paths = ace_paths(spec.name) if spec.name in ALIASES else None
            model = load_ace_step(spec.source, name=spec.name, shared=paths[1] if paths else None)
        elif spec.family == SA3:
            if not Path(spec.source).is_dir():
                raise FileNotFoundError(spec.source)
            from engine.models.stable_audio3 import load_stable_audio3

            model = load_stable_audio3(spec.source, name=spec.name)
        elif spec.family == "audioldm":
            from engine.models.audioldm import load_audioldm

            model = load_audioldm(spec.source, name=spec.name, local_files_only=local_only)
        elif spec.family == "audioldm2":
            from engine.models.audioldm2 import load_audioldm2

            model = load_audioldm2(spec.source, local_files_only=local_only)
        else:
            from engine.models.tango import load_tango

            model = load_tango(spec.source, local_files_only=local_only)
    except (ModelUnavailable, InputError):
        raise
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise _missing(spec, exc) from None
    model.name = spec.name
    for key, value in SHIPPED_DEFAULTS.get(spec.name, {}).items():
        setattr(model, key, value)
    model.cache_id = _identity(spec)
    return prec.apply(model.to(device, dtype), precision, compile_unet=compile_unet)


def _identity(spec: ModelSpec) -> str:
    """What the stage cache keys on: the family, the source and, for folders, when their files last changed, so a
    folder named like an alias, or retrained weights, never reuse another model's cached stages."""
    path = Path(spec.source)
    if not path.is_dir():
        return f"{spec.family}:{spec.source}"
    stamp = max((f.stat().st_mtime_ns for f in path.rglob("*") if f.is_file()), default=0)
    return f"{spec.family}:{path}:{stamp}"


def load_scorer_for(model, choice: str = "auto", *, device: str = "cpu", allow_download: bool = False):
    """The CLAP scorer for a model, or None (with a warning) when its weights are not available."""
    import logging

    from engine.scoring import ClapScorer

    if choice == "auto":
        if getattr(model, "name", "") in BUILTIN:
            return ClapScorer.tiny()
        if getattr(model, "name", "") in SHIPPED_CLAP:  # a shipped model scores with its own CLAP
            return load_scorer_for(model, str(SHIPPED_CLAP[model.name]), device=device, allow_download=allow_download)
        if getattr(model, "clap", None) is not None:  # AudioLDM 2 carries a full CLAP: score with its own
            return ClapScorer.from_components(model.clap, model.clap_tokenizer, model.clap_feature_extractor, device)
        choice = "laion/clap-htsat-unfused"
    try:
        return ClapScorer.load(choice, device=device, local_files_only=not allow_download)
    except ModelUnavailable as exc:
        logging.getLogger("aiedit.engine").warning("takes will not be scored: %s", exc)
        return None
