"""``aiedit edit``: run one edit from the command line and write the takes next to a JSON sidecar.

Everything the user typed is checked (audio, region, η, prompt, steps, model name) before the model loads, and
nothing is written unless the whole edit succeeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from engine.config import ConfigError, apply_config, fail
from engine.errors import Cancelled, EngineError, InputError
from engine.models.catalog import default_etas
from engine.params import (
    MAX_LYRICS,
    MODES,
    PAPER_STAGE_DEFAULTS,
    STARTS,
    EditParams,
    EditRequest,
    Inpaint,
    MusicContext,
    Region,
)
from engine.progress import Progress

STAGE_LABEL = {"preparing": "prepare", "embedding": "stage 1 embed", "finetune": "stage 2 tune",
               "inverting": "invert", "sampling": "stage 3 sample", "decoding": "decode", "scoring": "score"}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="aiedit edit", description="Edit an audio file with a text prompt.")
    ap.add_argument("input", help="audio file (anything libsndfile reads); never modified")
    ap.add_argument("--prompt", required=True, help="what the sound should become")
    ap.add_argument("--eta", type=float, nargs="+", default=None,
                    help="edit strengths η in [0, 1.5], one take each (sdedit, zeta, flowedit: strengths in (0, 1]); "
                         "default 0.25 0.5 0.75, on Stable Audio 3 flowedit 0.75 0.85 0.95 and sdedit 0.4 0.55 0.7 "
                         "(lower ones are near-copies there)")
    ap.add_argument("--mode", choices=list(MODES), default="lora",
                    help="lora | full (the paper's three stages), sdedit (preview), zeta (zero-shot edit, ᾱ-schedule "
                         "models), flowedit (zero-shot edit, flow models such as Stable Audio 3), repaint (the "
                         "model's own regeneration of --inpaint's range; strengths = start noise level) and cover "
                         "(the model's own restyle; strengths = cover strength): ACE-Step")
    ap.add_argument("--start-from", dest="start_from", choices=list(STARTS), default="noise",
                    help="stage 3 start for lora/full: fresh noise or the input inverted by the tuned model")
    ap.add_argument("--source-prompt", default="", help="zeta, flowedit: what the input sounds like (default: none)")
    ap.add_argument("--source-guidance", type=float, default=3.0,
                    help="zeta, flowedit: guidance of the source prompt (default 3, as ZETA's code; flowedit: only "
                         "with a source prompt and --guidance > 1)")
    ap.add_argument("--inpaint", metavar="START:END", help="regenerate only this range (seconds into the region)")
    ap.add_argument("--start", type=float, default=0.0, help="region start in the file (s)")
    ap.add_argument("--length", type=float, default=None, help="region length (s); default: to the end")
    ap.add_argument("--model", default="auto",
                    help="auto (default: the best model on this machine, else toy) | toy | sa3-medium | sa3-small | "
                         "ace-step | ace-step-sft | tango | audioldm2 | audioldm | hub id | folder | tiny, tiny-sa3, "
                         "tiny-ace (random weights, tests)")
    ap.add_argument("--seed", type=int, default=0)
    music = ap.add_argument_group("musical context (models that take it, such as ACE-Step; others note and ignore it)")
    music.add_argument("--lyrics", default=None, metavar="TEXT|@FILE",
                       help=f"the lyrics sung in the region (at most {MAX_LYRICS} characters), or @FILE to read them")
    music.add_argument("--bpm", type=float, default=None, help="tempo in beats per minute (20-300)")
    music.add_argument("--key", default=None, help='key and scale, such as "C major" or "F# minor"')
    music.add_argument("--time-signature", dest="time_signature", default=None, metavar="N/D",
                       help='such as "4/4", "6/8" (N 1-32, D 1, 2, 4, 8, 16 or 32)')
    music.add_argument("--language", default=None, help='language code of the lyrics, such as "en"')
    ap.add_argument("--out", default="aiedit-takes", help="folder for the takes and the JSON sidecar")
    d = PAPER_STAGE_DEFAULTS  # the help shows the engine's own fallbacks, so it cannot go stale
    ap.add_argument("--embed-steps", type=int, default=None,
                    help=f"stage 1 steps (default: the model's, else {d['embed_steps']})")
    ap.add_argument("--embed-lr", type=float, default=None,
                    help=f"stage 1 Adam rate (default: the model's, else {d['embed_lr']:g})")
    ap.add_argument("--tune-steps", type=int, default=None,
                    help=f"stage 2 steps (default: the model's, else {d['lora_steps']} LoRA / {d['full_steps']} full)")
    ap.add_argument("--tune-draws", type=int, default=None,
                    help=f"stage 2 noise draws per step, in one batch (default: the model's, else {d['lora_draws']} "
                         f"LoRA / {d['full_draws']} full)")
    ap.add_argument("--tune-lr", type=float, default=None,
                    help=f"stage 2 Adam rate (default: the model's, else {d['lora_lr']:g} LoRA / "
                         f"{d['full_lr']:g} full)")
    ap.add_argument("--lora-rank", type=int, default=8, help="LoRA rank (default 8)")
    ap.add_argument("--sample-steps", type=int, default=None,
                    help="stage 3 steps (default: the model's; flowedit: 28 on CUDA, without CUDA the grid on which "
                         "the strongest take runs 6 steps)")
    ap.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (default: the model's)")
    ap.add_argument("--sampler", choices=["ddim", "dpm"], default="ddim",
                    help="stage 3 sampler on ᾱ-schedule models: ddim (default) or dpm (DPM-Solver++, for fewer "
                         "--sample-steps); flow models use their own")
    ap.add_argument("--device", default=None,
                    help="auto (default: a CUDA GPU, else an Apple GPU, else the CPU) | cpu | cuda | cuda:N | mps")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="weight storage: auto = bf16 on a CUDA GPU that supports it, fp32 on CPU and Apple GPUs "
                         "(trained tensors and losses are fp32 either way)")
    ap.add_argument("--compile", action="store_true",
                    help="compile the training and sampling steps, one graph each, CUDA graphs on a GPU (a minute or "
                         "two of compiling once per loaded model)")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "aiedit" / "stages"),
                    help="stage 1-2 cache folder ('' disables the disk cache)")
    ap.add_argument("--cache-max-mb", type=float, default=None,
                    help="most disk the stage cache may use (default: a tenth of the free space, at most 2048 MB)")
    ap.add_argument("--allow-download", action="store_true", help="let the hub download missing weights")
    apply_config(ap, "edit")  # ~/.aiedit/config.toml: its values become defaults; flags still win
    return ap


def request_from_args(a: argparse.Namespace) -> EditRequest:
    inpaint = None
    if a.inpaint:
        try:
            s, e = (float(v) for v in a.inpaint.split(":"))
        except ValueError:
            raise InputError(f"--inpaint wants START:END in seconds, got {a.inpaint!r}") from None
        inpaint = Inpaint(s, e)
    etas = tuple(a.eta) if a.eta else default_etas(_family(a.model), a.mode)
    params = EditParams(prompt=a.prompt, etas=etas, mode=a.mode, seed=a.seed, inpaint=inpaint,
                        embed_steps=a.embed_steps, embed_lr=a.embed_lr, tune_steps=a.tune_steps, tune_lr=a.tune_lr,
                        lora_rank=a.lora_rank, sample_steps=a.sample_steps, guidance=a.guidance, sampler=a.sampler,
                        start=a.start_from, source_prompt=a.source_prompt, source_guidance=a.source_guidance,
                        tune_draws=a.tune_draws)
    return EditRequest(str(Path(a.input).expanduser().resolve()), Region(a.start, a.length), params,
                       music_from_args(a)).validate()


def _family(model: str) -> str:
    """The model family a ``--model`` names (for its default strengths), or "" when it cannot be told yet (the load
    then says why)."""
    from engine.models.registry import resolve

    try:
        return resolve(model).family
    except EngineError:
        return ""


def music_from_args(a: argparse.Namespace) -> MusicContext:
    """The musical-context flags; ``--lyrics @FILE`` reads the lyrics from a UTF-8 text file."""
    lyrics = a.lyrics
    if lyrics is not None and lyrics.startswith("@"):
        path = Path(lyrics[1:]).expanduser()
        try:
            lyrics = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read the lyrics file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return MusicContext(lyrics=lyrics, bpm=a.bpm, key=a.key, time_signature=a.time_signature, language=a.language)


class ProgressBar:
    """One line on stderr, redrawn in place: stage, bar, step count."""

    def __init__(self, stream=sys.stderr) -> None:
        self.stream = stream
        self.last = ""

    def __call__(self, p: Progress) -> None:
        width = 28
        filled = int(width * p.fraction)
        win = f" [window {p.window + 1}/{p.windows}]" if p.windows > 1 else ""
        line = f"\r{STAGE_LABEL.get(p.stage, p.stage):<15} |{'█' * filled}{'·' * (width - filled)}| " \
               f"{p.step}/{p.total}{win}"
        if line != self.last:
            self.stream.write(line.ljust(len(self.last)))
            self.stream.flush()
            self.last = line

    def close(self) -> None:
        if self.last:
            self.stream.write("\n")


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
    except ConfigError as exc:
        return fail(exc)
    args = parser.parse_args(argv)
    try:
        from engine.audio_io import check_request
        from engine.models.registry import resolve

        request = request_from_args(args)
        check_request(request)
        spec = resolve(args.model)
        if args.model.strip() == "auto":
            _announce_auto(spec.name)
        return _run(args, request)
    except EngineError as exc:
        print(f"aiedit: error: {exc}", file=sys.stderr)
        return 2
    except Cancelled:
        print("aiedit: cancelled", file=sys.stderr)
        return 130


def _announce_auto(name: str) -> None:
    """Say which model ``--model auto`` picked, and warn loudly when it is only the toy model."""
    from engine.models.registry import resolve_auto

    warning = resolve_auto()[1]
    print(f"aiedit: warning: {warning}" if warning else f"aiedit: --model auto: using {name}", file=sys.stderr)


def _run(args: argparse.Namespace, request: EditRequest) -> int:
    from engine.audio_io import write_wav_atomic
    from engine.editor import load_editor

    t0 = time.perf_counter()
    editor = load_editor(args.model, device=args.device, cache_dir=args.cache or None,
                         cache_max_mb=args.cache_max_mb, allow_download=args.allow_download,
                         precision=args.precision, compile_unet=args.compile)
    load_s = time.perf_counter() - t0
    bar = ProgressBar()
    try:
        result = editor.edit(request, progress=bar)
    finally:
        bar.close()
    out = Path(args.out)
    stem = Path(request.source).stem
    sidecar = {"input": request.source, "region": {"start": request.region.start, "length": request.region.length},
               "model": editor.model_name, "precision": str(editor.model.weight_dtype or editor.model.dtype)[6:],
               "params": result.params, "sample_rate": result.sample_rate,
               "channels": result.channels, "frames": result.frames, "cache_hit": result.cache_hit,
               "timings": {k: round(v, 3) for k, v in result.timings.items()} | {"load": round(load_s, 3)},
               "network_calls": result.network_calls, "music": request.music.to_dict(), "notes": result.notes,
               "windows": result.windows, "window_seconds": editor.model.max_seconds,
               "takes": [], "best": result.best}
    for take in result.takes:
        path = write_wav_atomic(out / f"{stem}_{request.params.mode}_eta{take.eta:.2f}.wav", take.audio,
                                result.sample_rate)
        sidecar["takes"].append({"eta": take.eta, "path": str(path.resolve()),
                                 "scores": take.scores.to_dict() if take.scores else None})
    side = out / f"{stem}_aiedit.json"
    tmp = side.with_suffix(".json.partial")
    tmp.write_text(json.dumps(sidecar, indent=2, ensure_ascii=False))
    tmp.replace(side)
    _summary(sidecar, side)
    return 0


def _summary(sidecar: dict, side: Path) -> None:
    p = sidecar["params"]
    print(f"edited {sidecar['input']} with {sidecar['model']} ({p['mode']}, seed {p['seed']}): \"{p['prompt']}\"")
    print(f"{'η':>6}  {'text':>7} {'audio':>7} {'sum':>7}  take")
    for i, t in enumerate(sidecar["takes"]):
        s = t["scores"] or {}
        mark = " ← best" if i == sidecar["best"] else ""
        print(f"{t['eta']:>6.2f}  {s.get('text', float('nan')):>7.3f} {s.get('audio', float('nan')):>7.3f} "
              f"{s.get('sum', float('nan')):>7.3f}  {t['path']}{mark}")
    for note in sidecar["notes"]:
        print(f"note: {note}")
    total = sum(v for k, v in sidecar["timings"].items())
    print(f"sidecar: {side.resolve()}   ({total:.1f} s{', stages 1-2 from cache' if sidecar['cache_hit'] else ''})")


if __name__ == "__main__":
    raise SystemExit(main())
