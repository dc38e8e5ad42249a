"""Which models are on this machine, where, and what each still needs — read from files, never loaded or fetched.

Looks in the Hugging Face hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``),
in the folders named by ``$AIEDIT_MODEL_DIRS`` (``os.pathsep``-separated) and the config file's ``model_dirs``, and
at the shipped models. ``--model auto`` takes the best model found here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from engine.models.catalog import (
    ACE,
    ACE_DIT_FOLDER,
    ACE_MAIN,
    ACE_SHARED,
    ALIASES,
    PIPELINE_FAMILIES,
    SA3,
    SHIPPED,
    SHIPPED_CLAP,
    T5GEMMA,
    converted_home,
    family_of_hub_id,
    kind_of,
)

# --model auto prefers these, best first. A daemon's default model answers every request, sounds and music alike,
# so the music specialists come last: a music model turns a prompt for a door knock into music, while the others
# can at least approach music. Among the rest: Stable Audio 3 (44.1 kHz stereo, 8-step sampling) > TANGO >
# AudioLDM 2 > AudioLDM, the larger checkpoint first (the undistilled SA3 medium-base after the small one: 100 steps
# where the others take 8). Among the music models: ACE-Step 1.5 (48 kHz stereo songs, lyrics; turbo first: 8
# steps, then sft, then base) > SA3 small music > AudioLDM 2 music.
AUTO_ORDER = ("sa3-medium", "sa3-small", "sa3-medium-base", "tango2-full", "tango2", "tango-full", "tango",
              "audioldm2-large", "audioldm2", "audioldm-l", "audioldm-m", "audioldm", "ace-step", "ace-step-sft",
              "ace-step-base", "sa3-small-music", "audioldm2-music")
FAMILY_RANK = {SA3: 0, ACE: 0, "tango": 1, "audioldm2": 2, "audioldm": 3}
TANGO_FILES = ("main_config.json", "vae_config.json", "pytorch_model_main.bin", "pytorch_model_vae.bin")
TANGO_TEXT = "google/flan-t5-large"
CLAP_SCORER = "laion/clap-htsat-unfused"
TOY_WARNING = ("no real model (Stable Audio 3, ACE-Step, TANGO, AudioLDM 2, AudioLDM) found on this machine: using "
               "the shipped toy model, which knows only the toy world (beeps, knocks, clicks, bursts, chirps, bells, "
               "hum, hiss) — run `aiedit models list` to see how to get a real one")


def hub_cache() -> Path:
    """The hub cache folder, read from the environment at call time (tests and users may change it)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def model_dirs() -> list[Path]:
    """Folders the user keeps models in: ``$AIEDIT_MODEL_DIRS`` first, then the config file's ``model_dirs``."""
    from engine.config import load_config

    dirs = [Path(p).expanduser() for p in os.environ.get("AIEDIT_MODEL_DIRS", "").split(os.pathsep) if p]
    extra = load_config(quiet=True).get("model_dirs", [])
    return dirs + [Path(str(p)).expanduser() for p in ([extra] if isinstance(extra, str) else extra)]


def hub_snapshot(repo_id: str, cache: Path | None = None) -> Path | None:
    """The cached snapshot folder of ``repo_id`` (the revision ``refs/main`` names, else the newest), or None."""
    repo = (cache or hub_cache()) / ("models--" + repo_id.replace("/", "--"))
    snaps = repo / "snapshots"
    if not snaps.is_dir():
        return None
    ref = repo / "refs" / "main"
    if ref.is_file():
        named = snaps / ref.read_text().strip()
        if named.is_dir():
            return named
    found = sorted((p for p in snaps.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    return found[0] if found else None


def family_of(folder: Path) -> str | None:
    """The model family a folder's layout says (without reading weights), or None when it is no model folder."""
    index = folder / "model_index.json"
    if index.is_file():
        import json

        try:
            cls = json.loads(index.read_text()).get("_class_name", "")
        except (OSError, ValueError):
            return None
        return PIPELINE_FAMILIES.get(cls)
    if (folder / "main_config.json").is_file() and (folder / "vae_config.json").is_file():
        return "tango"
    if ace_dit_ok(folder):
        return ACE
    return None


def ace_dit_ok(folder: Path) -> bool:
    """An ACE-Step DiT folder as ACE-Step publishes it: an ACE-Step ``config.json`` and its weights (no tensor
    read)."""
    import json

    cfg = folder / "config.json"
    if not cfg.is_file() or not any((folder / f).is_file() for f in ("model.safetensors",
                                                                      "model.safetensors.index.json")):
        return False
    try:
        return "audio_acoustic_hidden_dim" in json.loads(cfg.read_text())
    except (OSError, ValueError):
        return False


def ace_shared_missing(shared: Path | None) -> list[str]:
    """What of ACE-Step's shared parts (``vae/``, ``Qwen3-Embedding-0.6B/``) ``shared`` lacks."""
    need = [f"{d}/" for d in ACE_SHARED if shared is None or not (shared / d / "config.json").is_file()]
    return [f"{ACE_MAIN} {' and '.join(need)}"] if need else []


def ace_paths(alias: str) -> tuple[Path, Path | None] | None:
    """(DiT folder, folder holding the shared parts) of an ACE-Step alias in the hub cache, or None when its DiT
    is not there."""
    snap = hub_snapshot(ALIASES[alias][1])
    if snap is None:
        return None
    dit = snap / ACE_DIT_FOLDER[alias] if ACE_DIT_FOLDER[alias] else snap
    return (dit, hub_snapshot(ACE_MAIN)) if ace_dit_ok(dit) else None


def missing_files(folder: Path, family: str) -> list[str]:
    """Top-level files a loader opens first that the folder lacks (a cheap completeness check, no weights read)."""
    if family == "tango":
        return [f for f in TANGO_FILES if not (folder / f).is_file()]
    if family == ACE and not (folder / "model_index.json").is_file():
        return ace_shared_missing(folder.parent)  # an original DiT folder: vae/ and the text encoder beside it
    return [] if (folder / "model_index.json").is_file() else ["model_index.json"]


def tango_text_encoder(folder: Path) -> Path | None:
    """Where TANGO's FLAN-T5 tokenizer comes from: the snapshot itself, else the cached text-encoder repo."""
    if any((folder / f).is_file() for f in ("spiece.model", "tokenizer.json", "tokenizer_config.json")):
        return folder
    return hub_snapshot(TANGO_TEXT)


@dataclass
class Found:
    """A model found on disk: its name (alias or folder name), family, folder, and what it lacks to load."""

    name: str
    family: str
    folder: Path
    spec: str  # what to pass to load_model: the alias (loads from the hub cache) or the folder
    lacks: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not self.lacks


def sa3_converted(alias: str) -> Path | None:
    """The converted folder of a Stable Audio 3 alias (``<model folder>/<alias>`` or ``converted_home()/<alias>``)."""
    for base in (*model_dirs(), converted_home()):
        if (base / alias / "model_index.json").is_file():
            return base / alias
    return None


def find_alias(alias: str) -> Found | None:
    """The hub-cache snapshot of an alias (for Stable Audio 3: its converted folder), or None when absent."""
    family, repo = ALIASES[alias]
    if family == ACE:
        paths = ace_paths(alias)
        return None if paths is None else Found(alias, family, paths[0], alias, ace_shared_missing(paths[1]))
    if family == SA3:
        conv = sa3_converted(alias)
        if conv is not None:
            return Found(alias, family, conv, alias, missing_files(conv, family))
        snap = hub_snapshot(repo)
        return None if snap is None else Found(alias, family, snap, alias, ["conversion to diffusers layout"])
    snap = hub_snapshot(repo)
    if snap is None:
        return None
    lacks = missing_files(snap, family)
    if family == "tango" and tango_text_encoder(snap) is None:
        lacks.append(f"{TANGO_TEXT} (tokenizer)")
    return Found(alias, family, snap, alias, lacks)


def find_in_dirs() -> list[Found]:
    """Model folders inside the configured model folders (each folder itself or its direct subfolders)."""
    out: list[Found] = []
    for d in model_dirs():
        if not d.is_dir():
            continue
        for cand in (d, *sorted(p for p in d.iterdir() if p.is_dir())):
            family = family_of(cand)
            if family is None or (family == SA3 and cand.name in ALIASES):  # listed under its alias
                continue
            lacks = missing_files(cand, family)
            if family == "tango" and tango_text_encoder(cand) is None:
                lacks.append(f"{TANGO_TEXT} (tokenizer)")
            out.append(Found(cand.name, family, cand, str(cand), lacks))
    return out


def best_present() -> Found | None:
    """The best usable real model on this machine (:data:`AUTO_ORDER`: music specialists last; SA3 > TANGO >
    AudioLDM 2 > AudioLDM), or None. Reads no weights."""
    candidates: list[tuple[tuple[int, int, int], Found]] = []
    for i, alias in enumerate(AUTO_ORDER):
        f = find_alias(alias)
        if f is not None and f.usable:
            candidates.append(((kind_of(alias) == "music", FAMILY_RANK[f.family], i), f))
    for j, f in enumerate(find_in_dirs()):
        if f.usable:  # a configured folder beats a cached alias of the same family: the user put it there
            candidates.append(((kind_of(f.name, f.family) == "music", FAMILY_RANK[f.family], -1 - j), f))
    return min(candidates, key=lambda c: c[0])[1] if candidates else None


def resolve_auto() -> tuple[str, str | None]:
    """What ``--model auto`` means here: (spec, warning). Falls back to the shipped toy model, never to ``tiny``."""
    best = best_present()
    if best is not None:
        return best.spec, None
    return "toy", TOY_WARNING


# -- the inventory: every model aiedit knows, present or not -------------------------------------------------------

# What each family needs beside its own snapshot: (hub id, why, needed to run at all).
EXTRAS: dict[str, list[tuple[str, str, bool]]] = {
    "tango": [(TANGO_TEXT, "FLAN-T5 tokenizer (and encoder, for older snapshots)", True),
              (CLAP_SCORER, "CLAP, for take scores", False)],
    "audioldm": [(CLAP_SCORER, "CLAP, for take scores", False)],
    "audioldm2": [],
    SA3: [(T5GEMMA, "T5Gemma text encoder, copied into the converted folder", True),
          (CLAP_SCORER, "CLAP, for take scores", False)],
    ACE: [(CLAP_SCORER, "CLAP, for take scores", False)],
}


@dataclass
class Need:
    what: str  # a hub id or a shipped folder
    why: str
    required: bool
    present: bool


@dataclass
class Entry:
    """One model for ``aiedit models list``."""

    name: str
    family: str
    source: str  # hub id, shipped folder, or "built in"
    folder: Path | None  # where it is on disk, None when missing (or built in)
    present: bool
    size: int  # bytes on disk (0 when missing)
    needs: list[Need] = field(default_factory=list)
    note: str = ""

    @property
    def pull(self) -> str | None:
        """The command that fetches what is missing, or None when nothing is."""
        if self.source in ("built in",) or self.name in SHIPPED:
            return None
        if self.present and all(n.present for n in self.needs):
            return None
        return f"aiedit models pull {self.name}"


def folder_size(folder: Path) -> int:
    """Bytes on disk under a folder, following the hub cache's snapshot symlinks to their blobs."""
    total = 0
    for p in folder.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:
            continue
    return total


def _needs(family: str, folder: Path | None) -> list[Need]:
    out = []
    for repo, why, required in EXTRAS[family]:
        if repo == TANGO_TEXT and folder is not None:
            present = tango_text_encoder(folder) is not None
        elif repo == T5GEMMA and folder is not None:  # a converted folder carries its own copy
            present = (folder / "text_encoder").is_dir() or hub_snapshot(repo) is not None
        else:
            present = hub_snapshot(repo) is not None
        out.append(Need(repo, why, required, present))
    return out


def entries() -> list[Entry]:
    """Every model ``--model`` accepts by name, then the models found in the configured folders."""
    out: list[Entry] = []
    for name, (family, folder) in SHIPPED.items():
        present = (folder / "model_index.json").is_file()
        clap = SHIPPED_CLAP.get(name)
        needs = [Need(str(clap), "its own CLAP, for take scores", False, bool(clap and clap.is_dir()))] if clap else []
        out.append(Entry(name, family, str(folder), folder if present else None, present,
                         folder_size(folder) if present else 0, needs,
                         "shipped; knows only the toy world (docs/quality.md)"))
    for alias, (family, repo) in ALIASES.items():
        if family == ACE:
            found = find_alias(alias)
            shared = Need(f"{ACE_MAIN} ({', '.join(f'{d}/' for d in ACE_SHARED)})",
                          "the VAE and text encoder every ACE-Step DiT uses", True,
                          not ace_shared_missing(hub_snapshot(ACE_MAIN)))
            needs = ([] if repo == ACE_MAIN else [shared]) + _needs(family, None)
            from engine.models.catalog import ACE_PULL_GB, LICENCES

            note = f"{LICENCES[alias]}; pull ≈ {ACE_PULL_GB[alias]:.1f} GB"
            out.append(Entry(alias, family, repo, found.folder if found else None, found is not None,
                             folder_size(found.folder) if found else 0, needs, note))
            continue
        if family == SA3:
            found = find_alias(alias)
            present = found is not None and found.usable
            note = "gated: accept the licence on its model page first (aiedit models pull explains)"
            if found is not None and not found.usable:
                note = (f"downloaded to {found.folder} but not converted yet: `aiedit models pull {alias}` converts "
                        "it (what is downloaded is not fetched again)")
            out.append(Entry(alias, family, repo, found.folder if found else None, present,
                             folder_size(found.folder) if found else 0,
                             _needs(family, found.folder if present else None), note))
            continue
        snap = hub_snapshot(repo)
        present = snap is not None and not missing_files(snap, family)
        out.append(Entry(alias, family, repo, snap, present, folder_size(snap) if snap else 0,
                         _needs(family, snap)))
    for f in find_in_dirs():
        out.append(Entry(f.name, f.family, str(f.folder), f.folder, not missing_files(f.folder, f.family),
                         folder_size(f.folder), _needs(f.family, f.folder), "found in a configured model folder"))
    out.append(Entry("tiny", "tiny", "built in", None, True, 0, [], "random weights: tests only, never chosen by auto"))
    out.append(Entry("tiny-sa3", "tiny-sa3", "built in", None, True, 0, [],
                     "Stable Audio 3's classes at toy widths, random weights: tests only, never chosen by auto"))
    out.append(Entry("tiny-ace", "tiny-ace", "built in", None, True, 0, [],
                     "ACE-Step 1.5's classes at toy widths, random weights: tests only, never chosen by auto"))
    return out


def pull_plan(name: str) -> list[tuple[str, list[str] | None]]:
    """(repository, file patterns or None for all) that ``models pull NAME`` fetches. ACE-Step: the alias's DiT
    folder and the shared VAE and text encoder from ACE-Step/Ace-Step1.5, not its 5 Hz planner LM."""
    if name in ALIASES and ALIASES[name][0] == ACE:
        repo, sub = ALIASES[name][1], ACE_DIT_FOLDER[name]
        shared = [f"{d}/*" for d in ACE_SHARED]
        extras = [(r, None) for r, _, _ in EXTRAS[ACE]]
        if repo == ACE_MAIN:
            return [(repo, [f"{sub}/*", *shared]), *extras]
        return [(repo, None), (ACE_MAIN, shared), *extras]
    return [(r, None) for r in repos_to_pull(name)]


def repos_to_pull(name: str) -> list[str]:
    """The hub repositories ``models pull NAME`` fetches: the model and what it needs (required or not)."""
    if name in ALIASES and ALIASES[name][0] == ACE:
        return list(dict.fromkeys(r for r, _ in pull_plan(name)))
    if name in ALIASES:
        family, repo = ALIASES[name]
        return [repo, *(r for r, _, _ in EXTRAS[family])]
    if "/" in name:  # a hub id of a known family
        family = family_of_hub_id(name) or "audioldm"
        return [name, *(r for r, _, _ in EXTRAS[family])]
    raise KeyError(name)


def optional_repos(name: str) -> set[str]:
    """The repositories ``repos_to_pull`` lists that a model can run without (CLAP, for scores)."""
    family = ALIASES[name][0] if name in ALIASES else (family_of_hub_id(name) or "audioldm")
    return {r for r, _, required in EXTRAS[family] if not required}


def cache_folder_of(repo: str, cache: Path | None = None) -> Path:
    """Where the hub cache keeps a repository (what to copy between machines)."""
    return (cache or hub_cache()) / ("models--" + repo.replace("/", "--"))
