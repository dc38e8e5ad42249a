"""``aiedit models list|pull|verify``: see which models are on this machine, fetch one, check a copied folder.

Nothing here imports torch or loads a model: ``list`` and ``verify`` read folders and file headers, ``pull`` asks
``huggingface_hub`` for the files (with its progress bars) and, when there is no connection, says exactly what to
copy where. ACE-Step is ungated and loads as published: ``pull ace-step`` is the whole installation.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from engine.models import inventory
from engine.models.catalog import ACE, ACE_SHARED, ALIASES, BUILTIN, GATED, SA3, SHIPPED, SHIPPED_CLAP, converted_home
from engine.models.verify import Report, check_weights, verify_folder

# Only what the TANGO loader reads from the text-encoder repo (not its duplicate .bin/.h5/.msgpack weights).
PULL_PATTERNS = {inventory.TANGO_TEXT: ["*.json", "*.model", "*.safetensors"]}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="aiedit models", description="List, fetch and check models.")
    sub = ap.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="every model aiedit knows: present or not, where, size, what it needs")
    p = sub.add_parser("pull", help="fetch a model and what it needs into the Hugging Face cache")
    p.add_argument("name", help=f"one of {', '.join(ALIASES)} or a hub id")
    v = sub.add_parser("verify", help="check a model's configs and weights without running it (exit 1 if bad)")
    v.add_argument("name", help="a model name (toy, tango, audioldm2, ...) or a folder")
    return ap


def human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def cmd_list(out=None) -> int:
    out = out or sys.stdout
    cache = inventory.hub_cache()
    print(f"Hugging Face cache: {cache}", file=out)
    dirs = inventory.model_dirs()
    print(f"model folders: {', '.join(map(str, dirs)) if dirs else 'none (set model_dirs or AIEDIT_MODEL_DIRS)'}",
          file=out)
    best, warning = inventory.resolve_auto()
    print(f"--model auto → {best}{'  (only the toy world: no real model found)' if warning else ''}\n", file=out)
    for e in inventory.entries():
        state = "present" if e.present else "missing"
        where = str(e.folder) if e.folder else e.source
        size = f", {human(e.size)}" if e.size else ""
        print(f"{e.name:<16} {e.family:<14} {state:<8} {where}{size}", file=out)
        if e.note:
            print(f"{'':<16} {e.note}", file=out)
        for n in e.needs:
            mark = "ok" if n.present else "missing"
            print(f"{'':<16} needs {n.what} ({n.why}{'' if n.required else ', optional'}): {mark}", file=out)
        if e.pull:
            print(f"{'':<16} get it: {e.pull}", file=out)
    return 0


def copy_instructions(name: str, repos: list[str]) -> str:
    cache = inventory.hub_cache()
    lines = ["No connection to the Hugging Face hub. On a connected machine run:",
             f"    aiedit models pull {name}      (or: hf download {repos[0]}"
             + "".join(f"; hf download {r}" for r in repos[1:]) + ")",
             "then copy these folders from that machine's cache (~/.cache/huggingface/hub) into this one:"]
    lines += [f"    {inventory.cache_folder_of(r, Path('~/.cache/huggingface/hub')).name}/  →  "
              f"{inventory.cache_folder_of(r, cache)}/" for r in repos]
    if any(r in GATED for r in repos):
        lines.append(f"or copy the folder converted on that machine (the pull prints the conversion command) to "
                     f"{sa3_target(name)}/")
    lines.append(f"and check the copy with `aiedit models verify {name}`.")
    return "\n".join(lines)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def cmd_pull(name: str, out=None, err=None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    if name in SHIPPED or name in BUILTIN:
        print(f"{name} ships with aiedit: nothing to pull", file=out)
        return 0
    try:
        repos = inventory.repos_to_pull(name)
    except KeyError:
        print(f"aiedit models: error: unknown model {name!r}: use one of {', '.join(ALIASES)} or a hub id", file=err)
        return 2
    gated = [r for r in repos if r in GATED]
    for repo in gated:
        print(licence_note(repo), file=out)
    if _offline():
        print(f"HF_HUB_OFFLINE is set (unset it to fetch from this machine).\n{copy_instructions(name, repos)}",
              file=err)
        return 1
    from huggingface_hub import snapshot_download

    plan = inventory.pull_plan(name)
    for repo, patterns in plan:
        print(f"pulling {repo}{' (' + ', '.join(patterns) + ')' if patterns else ''} ...", file=out, flush=True)
        try:
            path = snapshot_download(repo, allow_patterns=patterns or PULL_PATTERNS.get(repo))
        except Exception as exc:  # no connection, DNS, gated repo, disk full: say what to do instead
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            hint = f"\n{licence_note(repo)}" if repo in GATED and "gated" in why.lower() + type(exc).__name__.lower() \
                else ""
            print(f"cannot fetch {repo}: {why}{hint}\n{copy_instructions(name, repos)}", file=err)
            return 1
        print(f"  → {path}", file=out)
        if repo in GATED:
            print(convert_instructions(name, repo, Path(path)), file=out)
            return 0
    return cmd_verify(name, out=out)


def licence_note(repo: str) -> str:
    """What a gated download needs from the user; aiedit never asks for, reads out or stores a token itself."""
    return (f"{repo} is gated under {GATED[repo]}.\n"
            f"  1. accept the licence at https://huggingface.co/{repo} (logged in to your Hugging Face account);\n"
            "  2. give huggingface_hub your access token: `hf auth login`, or set HF_TOKEN in the environment.\n"
            "  aiedit uses whatever huggingface_hub finds and never stores a token itself.")


def sa3_target(name: str) -> Path:
    alias = name if name in ALIASES else name.rsplit("/", 1)[-1]
    return converted_home() / alias


def convert_instructions(name: str, repo: str, snapshot: Path | None) -> str:
    """The hub checkpoint is in stable-audio-tools layout; diffusers converts it (its SA3 docs)."""
    src = snapshot or Path(f"<the downloaded {repo} folder>")
    return ("Stable Audio 3 checkpoints are not published in diffusers layout: convert this one with diffusers' own "
            "script (from the diffusers repository, the version installed here):\n"
            f"    python scripts/convert_stable_audio_3_to_diffusers.py --checkpoint_path {src / 'model.safetensors'} "
            f"--model_config_path {src / 'model_config.json'} --output_dir {sa3_target(name)}\n"
            f"then check it with `aiedit models verify {name}` (--model {name} loads it from there).")


def target_folders(name: str) -> tuple[list[tuple[str, Path]], str | None]:
    """(label, folder) pairs to verify for a name or path, or an error line."""
    if name in SHIPPED:
        pairs = [(name, SHIPPED[name][1])]
        if name in SHIPPED_CLAP:
            pairs.append((f"{name} CLAP", SHIPPED_CLAP[name]))
        return pairs, None
    if name in ALIASES and ALIASES[name][0] == ACE:
        paths = inventory.ace_paths(name)
        if paths is None:
            return [], (f"{name} ({ALIASES[name][1]}) is not on this machine (looked in {inventory.hub_cache()}): "
                        f"`aiedit models pull {name}`")
        dit, shared = paths
        parts = [(f"{name} {d}", shared / d) for d in ACE_SHARED] if shared else []
        if not shared:
            return [], f"{name} needs {ALIASES[name][1]}'s shared parts: `aiedit models pull {name}`"
        return [(name, dit), *parts], None
    if name in ALIASES and ALIASES[name][0] == SA3:
        found = inventory.find_alias(name)
        if found is None or not found.usable:
            return [], (f"{name} ({ALIASES[name][1]}) is not converted on this machine (looked for "
                        f"{sa3_target(name)}): `aiedit models pull {name}`")
        return [(name, found.folder)], None
    if name in ALIASES:
        snap = inventory.hub_snapshot(ALIASES[name][1])
        if snap is None:
            return [], (f"{name} ({ALIASES[name][1]}) is not on this machine (looked in {inventory.hub_cache()}): "
                        f"`aiedit models pull {name}`")
        return [(name, snap)], None
    path = Path(name).expanduser()
    if path.is_dir():
        return [(name, path)], None
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        snap = inventory.hub_snapshot(name)
        if snap is not None:
            return [(name, snap)], None
    return [], f"{name} is neither a model name ({', '.join((*SHIPPED, *ALIASES))}) nor a folder"


def verify_any(label: str, folder: Path) -> Report:
    """A model folder, or a bare transformers folder (a CLAP scorer: config.json + weights)."""
    if (folder / "config.json").is_file() and not (folder / "model_index.json").is_file() \
            and not inventory.ace_dit_ok(folder):
        import json

        report = Report(folder, "clap")
        try:
            cfg = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError) as exc:
            report.add("config.json", False, f"unreadable: {exc}")
            return report
        check_weights(report, folder, "weights", (cfg.get("architectures") or [""])[0], cfg)
        return report
    return verify_folder(folder)


def cmd_verify(name: str, out=None) -> int:
    out = out or sys.stdout
    pairs, error = target_folders(name)
    if error:
        print(f"FAIL {error}", file=out)
        return 1
    ok = True
    for label, folder in pairs:
        report = verify_any(label, folder)
        print(f"{label}: {folder}", file=out)
        for c in report.checks:
            print(f"  {'ok  ' if c.ok else 'FAIL'} {c.what}: {c.detail}", file=out)
        ok = ok and report.ok
    print("verified: all checks passed" if ok else "verify FAILED: see the lines marked FAIL", file=out)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.action == "list":
        return cmd_list()
    if args.action == "pull":
        return cmd_pull(args.name)
    return cmd_verify(args.name)


if __name__ == "__main__":
    raise SystemExit(main())
