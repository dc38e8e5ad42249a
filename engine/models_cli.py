"""``aiedit models list|pull|verify``: see which models are on this machine, fetch one, check a copied folder.

Nothing here imports torch or loads a model except a Stable Audio 3 conversion: ``list`` and ``verify`` read folders
and file headers; ``pull`` fetches the files into the hub cache (resuming partial ones, free space checked first:
engine/models/download.py), converts SA3 checkpoints (engine/models/convert_sa3.py) and verifies the result; with no
connection it says exactly what to copy where (``pull sa3-* --from DIR`` converts what was copied). ACE-Step is
ungated and loads as published: ``pull ace-step`` is the whole installation.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from engine.models import inventory
from engine.models.catalog import (
    ACE,
    ACE_SHARED,
    ALIASES,
    BUILTIN,
    GATED,
    SA3,
    SHIPPED,
    SHIPPED_CLAP,
    T5GEMMA,
    converted_home,
)
from engine.models.download import human
from engine.models.verify import Report, check_weights, verify_folder

CHECKPOINT, MODEL_CONFIG = "model.safetensors", "model_config.json"  # SA3's stable-audio-tools layout
SA3_ALIASES = [a for a, (fam, _) in ALIASES.items() if fam == SA3]
# Only what the TANGO loader reads from the text-encoder repo (not its duplicate .bin/.h5/.msgpack weights).
PULL_PATTERNS = {inventory.TANGO_TEXT: ["*.json", "*.model", "*.safetensors"]}
# Stable Audio 3: the checkpoint and its config; T5Gemma's config, weights and tokenizer; CLAP's safetensors.
SA3_PATTERNS = {**{repo: [CHECKPOINT, MODEL_CONFIG] for fam, repo in ALIASES.values() if fam == SA3},
                T5GEMMA: ["*.json", "*.safetensors", "*.model"],
                inventory.CLAP_SCORER: ["*.json", "*.safetensors", "*.txt"]}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="aiedit models", description="List, fetch and check models.")
    sub = ap.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="every model aiedit knows: present or not, where, size, what it needs")
    p = sub.add_parser("pull", help="fetch a model and what it needs into the Hugging Face cache")
    p.add_argument("name", help=f"one of {', '.join(ALIASES)} or a hub id")
    p.add_argument("--from", dest="source", metavar="DIR", default=None,
                   help="convert a Stable Audio 3 checkpoint copied here by hand (model.safetensors, "
                        "model_config.json and the T5Gemma files in DIR/t5gemma-b-b-ul2/); no network")
    v = sub.add_parser("verify", help="check a model's configs and weights without running it (exit 1 if bad)")
    v.add_argument("name", help="a model name (toy, tango, audioldm2, ...) or a folder")
    return ap


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
    if name in ALIASES and ALIASES[name][0] == SA3:
        return sa3_copy_instructions(name)
    lines = ["On a connected machine run:",
             f"    aiedit models pull {name}      (or: hf download {repos[0]}"
             + "".join(f"; hf download {r}" for r in repos[1:]) + ")",
             "then copy these folders from that machine's cache (~/.cache/huggingface/hub) into this one:"]
    lines += [f"    {inventory.cache_folder_of(r, Path('~/.cache/huggingface/hub')).name}/  →  "
              f"{inventory.cache_folder_of(r, cache)}/" for r in repos]
    lines.append(f"and check the copy with `aiedit models verify {name}`.")
    return "\n".join(lines)


def sa3_copy_instructions(name: str) -> str:
    """An offline machine: copy the two repositories' files into one folder by hand and convert from it."""
    repo = ALIASES[name][1]
    return "\n".join([
        "On a machine with a connection (and the licences accepted), download:",
        f"    {repo}: {CHECKPOINT} and {MODEL_CONFIG}   (hf download {repo} {CHECKPOINT} {MODEL_CONFIG})",
        f"    {T5GEMMA}: its config, weights and tokenizer files   (hf download {T5GEMMA})",
        "copy them onto this machine as one folder DIR:",
        f"    DIR/{CHECKPOINT}",
        f"    DIR/{MODEL_CONFIG}",
        f"    DIR/{T5GEMMA.rsplit('/', 1)[1]}/   (the T5Gemma files)",
        f"then run `aiedit models pull {name} --from DIR`: it converts them into {sa3_target(name)}/ here "
        "(or copy a folder already converted on the other machine there and run "
        f"`aiedit models verify {name}`)."])


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


class Printer:
    """Download progress on one line per file: rewritten in place on a terminal, else a line per 10 %."""

    def __init__(self, out) -> None:
        self.out = out
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self.shown: dict[str, int] = {}
        self.last = 0.0

    def __call__(self, name: str, have: int, total: int) -> None:
        import time

        pct = 100 if total <= 0 else min(100, have * 100 // total)
        step = pct // 10
        now = time.monotonic()
        if name not in self.shown:
            self.shown[name] = -1
            if have and have < total:
                print(f"  {name}: resuming at {human(have)} of {human(total)}", file=self.out, flush=True)
        if self.tty:
            if now - self.last >= 0.2 or pct == 100:
                end = "\n" if pct == 100 and self.shown[name] != 10 else ""
                print(f"\r  {name}: {pct:3d}% of {human(total)}", end=end, file=self.out, flush=True)
                self.last = now
                self.shown[name] = 10 if pct == 100 else step
        elif step > self.shown[name]:
            self.shown[name] = step
            print(f"  {name}: {pct:3d}% of {human(total)}", file=self.out, flush=True)


def _fail(err, repo: str, exc: BaseException, name: str, repos: list[str]) -> int:
    from engine.models.download import DownloadError

    if isinstance(exc, DownloadError):
        why = str(exc)
    else:  # no connection, DNS, gated repo: say what to do instead
        why = f"cannot fetch {repo}: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        if repo in GATED and any(w in why.lower() for w in ("gated", "401", "403", "unauthorized", "forbidden")):
            why += f"\n{licence_note(repo)}"
    print(f"{why}\n{copy_instructions(name, repos)}", file=err)
    return 1


def cmd_pull(name: str, out=None, err=None, source: str | None = None) -> int:
    """Fetch a model (resuming partial files, free space checked first) into the hub cache, convert Stable Audio 3
    to diffusers layout, verify. ``source``: a folder holding an SA3 checkpoint copied by hand (no network)."""
    out, err = out or sys.stdout, err or sys.stderr
    if name in SHIPPED or name in BUILTIN:
        print(f"{name} ships with aiedit: nothing to pull", file=out)
        return 0
    try:
        repos = inventory.repos_to_pull(name)
    except KeyError:
        print(f"aiedit models: error: unknown model {name!r}: use one of {', '.join(ALIASES)} or a hub id", file=err)
        return 2
    sa3 = name in ALIASES and ALIASES[name][0] == SA3
    if source is not None:
        if not sa3:
            print(f"aiedit models: error: --from converts a Stable Audio 3 checkpoint ({', '.join(SA3_ALIASES)}); "
                  f"{name} is read from the hub cache as it is: copy it there (`aiedit models pull {name}` offline "
                  "says where)", file=err)
            return 2
        return convert_from(name, Path(source).expanduser(), out, err)
    for repo in (r for r in repos if r in GATED):
        print(licence_note(repo), file=out)
    if _offline():
        print(f"HF_HUB_OFFLINE is set (unset it to fetch from this machine).\n{copy_instructions(name, repos)}",
              file=err)
        return 1
    from engine.models import download

    cache = inventory.hub_cache()
    optional = inventory.optional_repos(name)
    plans: list[download.Planned] = []
    for repo, patterns in inventory.pull_plan(name):  # ACE-Step: a DiT folder and the shared parts, not the LM
        try:
            plans.append(download.plan(repo, patterns or (SA3_PATTERNS if sa3 else PULL_PATTERNS).get(repo), cache))
        except Exception as exc:
            if repo in optional:  # takes are unscored without it; the model itself works
                print(f"skipping {repo} (optional): {type(exc).__name__}", file=out)
                continue
            return _fail(err, repo, exc, name, repos)
    convert_need = sum(p.size for p in plans if p.repo in (ALIASES[name][1], T5GEMMA)) if sa3 else 0
    try:
        check_disks(cache, sum(p.missing for p in plans), sa3_target(name) if sa3 else None, convert_need, name)
    except download.NotEnoughSpace as exc:
        print(f"aiedit models: {exc}", file=err)
        return 1
    progress = Printer(out)
    snapshots: dict[str, Path] = {}
    for p in plans:
        print(f"pulling {p.repo} ({human(p.size)}{', ' + human(p.missing) + ' to fetch' if p.missing else ''})",
              file=out, flush=True)
        try:
            snapshots[p.repo] = download.fetch(p, progress)
        except Exception as exc:
            return _fail(err, p.repo, exc, name, repos)
        print(f"  → {snapshots[p.repo]}", file=out)
    if sa3:
        return convert_and_verify(name, snapshots[ALIASES[name][1]], snapshots[T5GEMMA], out, err)
    return cmd_verify(name, out=out)


def check_disks(cache: Path, fetch_need: int, target: Path | None, convert_need: int, name: str) -> None:
    """The download's and the conversion's space, each on its own disk (summed when they share one)."""
    from engine.models import download

    def device(p: Path) -> int | None:
        for q in (p, *p.parents):
            try:
                return q.stat().st_dev
            except OSError:
                continue
        return None

    if target is None or device(target) == device(cache):
        download.check_space(cache, fetch_need + convert_need, f"{name} (download and conversion)")
        return
    download.check_space(cache, fetch_need, f"{name} (download)")
    download.check_space(target, convert_need, f"{name} (conversion)")


def text_encoder_for(source: Path) -> Path | None:
    """The T5Gemma folder beside a hand-copied checkpoint, else the hub cache's."""
    for sub in (T5GEMMA.rsplit("/", 1)[1], "text_encoder", "t5gemma"):
        if (source / sub / "config.json").is_file():
            return source / sub
    return inventory.hub_snapshot(T5GEMMA)


def convert_from(name: str, source: Path, out, err) -> int:
    from engine.models import download

    ckpt = source / CHECKPOINT
    if not source.is_dir() or not ckpt.is_file() or not (source / MODEL_CONFIG).is_file():
        print(f"aiedit models: error: {source} must hold {CHECKPOINT} and {MODEL_CONFIG} (a Stable Audio 3 "
              f"checkpoint copied from {ALIASES[name][1]})\n{sa3_copy_instructions(name)}", file=err)
        return 2
    te = text_encoder_for(source)
    if te is None:
        print(f"aiedit models: error: no T5Gemma text encoder: put the files of {T5GEMMA} in "
              f"{source / T5GEMMA.rsplit('/', 1)[1]}/ (or pull {T5GEMMA} into the hub cache)", file=err)
        return 2
    need = ckpt.stat().st_size + sum(f.stat().st_size for f in te.glob("*.safetensors"))
    try:
        download.check_space(sa3_target(name), need, f"{name} (conversion)")
    except download.NotEnoughSpace as exc:
        print(f"aiedit models: {exc}", file=err)
        return 1
    return convert_and_verify(name, source, te, out, err)


def convert_and_verify(name: str, checkpoint: Path, text_encoder: Path, out, err) -> int:
    from engine.models.convert_sa3 import ConversionError, convert

    target = sa3_target(name)
    print(f"converting {checkpoint} to diffusers layout (aiedit's own converter) ...", file=out, flush=True)
    try:
        convert(checkpoint, text_encoder, target, log=lambda line: print(line, file=out, flush=True))
    except ConversionError as exc:
        print(f"aiedit models: cannot convert {name}: {exc}", file=err)
        return 1
    print(f"  → {target}", file=out)
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
        return cmd_pull(args.name, source=args.source)
    return cmd_verify(args.name)


if __name__ == "__main__":
    raise SystemExit(main())
