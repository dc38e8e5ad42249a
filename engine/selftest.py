"""``aiedit selftest``: what a preview and a deep edit of a 10-second item will take on this machine, with this model.

A full deep edit of a real model takes minutes, so the self-test does not run one. It edits a short generated clip
(knocks over a hum, one model window long at most) in the model's preview mode (FlowEdit on flow models, ZETA on
ᾱ-schedule ones) and as a LoRA deep edit, each twice — with 2 steps per stage and with about a tenth of the
defaults — after one throw-away warm-up edit, measures every stage, and scales: each stage's time per step (the slope
between the two probes) × the defaults' steps, plus its fixed part, per window of a 10 s item, plus the edit's own
fixed costs (prompt encoding, assembling, scoring) as measured. Measured on the toy model against real 10 s edits:
docs/performance.md. The printout says which figures were measured and which were scaled. The three
strengths are the REAPER dialog's defaults (0.3, 0.5, 0.7), all sampled in one batch as the daemon does.

It ends with a block of versions and devices to paste into a bug report. Nothing leaves the machine: the model loads
from disk only (no download), and nothing is sent anywhere.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ITEM_S = 10.0
ETAS = (0.3, 0.5, 0.7)  # reaper_scripts/aiedit/settings.lua: last_etas
PROMPT = "a heavy wooden door slams twice"
PROBE_FRACTION = 0.1  # of each stage's default steps, at least MIN_STEPS
MIN_STEPS = 2


def make_clip(path: Path, seconds: float, sr: int = 44_100) -> Path:
    """A deterministic stereo clip: four decaying knocks over a low hum, a little noise."""
    import soundfile as sf

    rng = np.random.default_rng(27)
    n = max(1, int(seconds * sr))
    t = np.arange(n) / sr
    hum = 0.05 * np.sin(2 * np.pi * 55 * t) + 0.02 * np.sin(2 * np.pi * 110 * t)
    knocks = np.zeros(n)
    for start in np.linspace(0.1, max(0.1, seconds - 0.4), 4):
        k = int(start * sr)
        m = min(n - k, int(0.25 * sr))
        if m > 0:
            env = np.exp(-np.arange(m) / (0.03 * sr))
            knocks[k:k + m] += 0.5 * env * (rng.standard_normal(m) * 0.6 + np.sin(2 * np.pi * 180 * t[:m]))
    mono = hum + knocks + 0.003 * rng.standard_normal(n)
    stereo = np.stack([mono, 0.9 * mono], axis=1) / max(1.0, float(np.abs(mono).max()) / 0.8)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), stereo.astype(np.float32), sr, subtype="FLOAT")
    return path


def preview_mode(modes: tuple[str, ...]) -> str:
    for mode in ("flowedit", "zeta", "sdedit"):
        if mode in modes:
            return mode
    return modes[0]


def windows_for(model, seconds: float) -> int:
    """How many windows the editor cuts a clip of ``seconds`` into for this model (engine.editor's plan)."""
    from engine.editor import WINDOW_OVERLAP_S
    from engine.splice import plan_windows

    msr = model.sample_rate
    total = int(seconds * msr)
    window = int(model.max_seconds * msr)
    overlap = min(int(WINDOW_OVERLAP_S * msr), window // 4)
    return len(plan_windows(total, (0, total), window, overlap))


@dataclass
class Figure:
    """Two measured probes of one mode and what they scale to."""

    mode: str
    probe_s: float  # wall time of both probe edits, measured
    small: dict[str, int]  # steps of the first probe
    large: dict[str, int]  # steps of the second
    default_steps: dict[str, int]
    estimate_s: float  # a 10 s item at the defaults, scaled
    windows: int  # windows of the 10 s item
    timings: dict[str, float] = field(default_factory=dict)  # the larger probe's


STAGES = {  # which measured timings scale with which step count
    "embed_steps": ("embedding",),
    "tune_steps": ("finetune",),
    "sample_steps": ("sample", "invert"),
}
FIXED = ("prepare", "assemble", "score")  # once per edit
PER_WINDOW = ("decode",)


def scale(small_t: dict[str, float], large_t: dict[str, float], small: dict[str, int], large: dict[str, int],
          default: dict[str, int], probe_windows: int, item_windows: int) -> float:
    """Seconds for the item from two probes with different step counts: each stage's time per step is the slope
    between them and what is left at zero steps its fixed cost (adapter set-up, optimiser, the first calls), so a
    short probe's overheads are not multiplied by the defaults' step counts. Fixed costs of the edit count once,
    per-window ones (decoding, each stage's fixed part, its steps) once per window of the item."""
    pw = max(probe_windows, 1)
    per_window = sum(large_t.get(k, 0.0) for k in PER_WINDOW) / pw
    for key, stages in STAGES.items():
        if key not in default:
            continue
        t_small = sum(small_t.get(s, 0.0) for s in stages) / pw
        t_large = sum(large_t.get(s, 0.0) for s in stages) / pw
        per_step = max(0.0, (t_large - t_small) / max(large[key] - small[key], 1))
        per_window += max(0.0, t_small - per_step * small[key]) + per_step * default[key]
    return sum(large_t.get(k, 0.0) for k in FIXED) + per_window * item_windows


def _measured_edit(editor, clip: Path, seconds: float, mode: str, steps: dict[str, int]):
    """One edit with these step counts and a fresh seed (a stage-cache hit would measure nothing)."""
    from engine.params import EditParams, EditRequest, Region

    params = EditParams(prompt=PROMPT, etas=ETAS, mode=mode, seed=int.from_bytes(os.urandom(3), "little"), **steps)
    t0 = time.perf_counter()
    result = editor.edit(EditRequest(source=str(clip), region=Region(0.0, seconds), params=params))
    return dict(result.timings), result.windows, time.perf_counter() - t0


def probe(editor, clip: Path, seconds: float, mode: str, windows: int) -> Figure:
    """Two short measured edits in ``mode`` (``MIN_STEPS`` per stage, then about a tenth of the defaults) and their
    scaled estimate for a 10 s item at the defaults."""
    from engine.params import EditParams

    defaults = editor.resolve_params(EditParams(prompt=PROMPT, etas=ETAS, mode=mode, seed=1))
    default_steps = {"sample_steps": int(defaults.sample_steps or editor.model.default_steps)}
    if mode in ("lora", "full"):
        default_steps |= {"embed_steps": int(defaults.embed_steps or 0), "tune_steps": int(defaults.tune_steps or 0)}
    small = {k: MIN_STEPS for k in default_steps}
    large = {k: max(MIN_STEPS + 4, round(v * PROBE_FRACTION)) for k, v in default_steps.items()}
    small_t, _, small_s = _measured_edit(editor, clip, seconds, mode, small)
    large_t, large_w, large_s = _measured_edit(editor, clip, seconds, mode, large)
    estimate = scale(small_t, large_t, small, large, default_steps, large_w, windows)
    return Figure(mode, small_s + large_s, small, large, default_steps, estimate, windows, large_t)


def warm_up(editor, clip: Path, seconds: float, mode: str) -> float:
    """One throw-away edit: the first calls of a freshly loaded model pay for lazy set-up, which is no edit's cost."""
    return _measured_edit(editor, clip, seconds, mode, {"sample_steps": MIN_STEPS})[2]


def duration(s: float) -> str:
    if s < 90:
        return f"{s:.1f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def steps_text(steps: dict[str, int]) -> str:
    names = {"embed_steps": "embedding", "tune_steps": "fine-tune", "sample_steps": "sampling"}
    return " + ".join(f"{steps[k]} {names[k]}" for k in ("embed_steps", "tune_steps", "sample_steps") if k in steps)


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("aiedit", "torch", "diffusers", "transformers", "peft", "huggingface_hub", "safetensors", "numpy",
                 "soundfile", "soxr"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def report_block(model_line: str, device_line: str, figures: list[str]) -> list[str]:
    """Versions and devices for a bug report, as plain lines (paste them; nothing was sent anywhere)."""
    import torch

    from engine.devices import mps_available, mps_built
    from engine.models.fit import ram_gib

    v = versions()
    if torch.cuda.is_available():
        gpus = "; ".join(f"{i}: {torch.cuda.get_device_name(i)} "
                         f"{torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB"
                         for i in range(torch.cuda.device_count()))
        cuda = f"CUDA {torch.version.cuda}, {gpus}"
    else:
        cuda = f"none (torch built {'with CUDA ' + str(torch.version.cuda) if torch.version.cuda else 'for CPU'})"
    mps = "available" if mps_available() else "built, not available" if mps_built() else "not built"
    lines = [
        "--- aiedit self-test report (paste into a bug report; nothing was sent anywhere) ---",
        f"aiedit {v['aiedit']}; python {platform.python_version()}; {platform.platform()}",
        f"torch {v['torch']}; diffusers {v['diffusers']}; transformers {v['transformers']}; peft {v['peft']}; "
        f"huggingface_hub {v['huggingface_hub']}; safetensors {v['safetensors']}; numpy {v['numpy']}; "
        f"soundfile {v['soundfile']}; soxr {v['soxr']}",
        f"cuda: {cuda}; mps: {mps}; cpu: {os.cpu_count()} threads, torch uses {torch.get_num_threads()}; "
        f"ram: {ram_gib():.1f} GiB",
        device_line, model_line, *figures, "---"]
    return lines


def run(model: str = "auto", device: str | None = None, precision: str = "auto", out=None) -> int:
    """Load, probe, print; returns an exit status (errors are one line, exit 2)."""
    from engine.editor import load_editor
    from engine.errors import EngineError

    out = out or sys.stdout
    t0 = time.perf_counter()
    try:
        editor = load_editor(model, device=device, precision=precision)
    except EngineError as exc:
        print(f"aiedit selftest: error: {exc}", file=sys.stderr)
        return 2
    load_s = time.perf_counter() - t0
    m = editor.model
    weights = str(m.weight_dtype or m.dtype).removeprefix("torch.")
    seconds = round(min(ITEM_S, m.max_seconds), 2)
    windows = windows_for(m, ITEM_S)
    print(f"aiedit selftest: {m.name} on {m.device} ({weights} weights); a {seconds:g} s clip generated here "
          f"(knocks over a hum), strengths {' '.join(f'{e:g}' for e in ETAS)} in one batch", file=out)
    print(f"  load              {duration(load_s):>9}   measured", file=out, flush=True)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="aiedit-selftest-") as tmp:
        clip = make_clip(Path(tmp) / "selftest clip.wav", seconds)
        try:
            warm = warm_up(editor, clip, seconds, preview_mode(m.modes))
            print(f"  warm-up           {duration(warm):>9}   measured, not counted (first calls of the model)",
                  file=out, flush=True)
        except EngineError as exc:
            print(f"  warm-up failed: {exc}", file=out)
        for label, mode in (("preview", preview_mode(m.modes)), ("deep edit", "lora")):
            if mode not in m.modes:
                continue
            try:
                f = probe(editor, clip, seconds, mode, windows)
            except EngineError as exc:
                print(f"  {label} ({mode}): failed: {exc}", file=out)
                continue
            figures.append(f)
            print(f"  {label + ' (' + mode + ')':<17} {duration(f.probe_s):>9}   measured: two edits of one "
                  f"{seconds:g} s window, {steps_text(f.small)} and {steps_text(f.large)} steps", file=out)
            print(f"  {'  10 s item':<17} ≈{duration(f.estimate_s):>8}   scaled to the defaults' "
                  f"{steps_text(f.default_steps)} steps × {f.windows} window{'s' if f.windows > 1 else ''}",
                  file=out, flush=True)
    load = f"a 1-minute load average of {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "the current load"
    print(f"  scaled figures assume time grows linearly with steps and windows; measured under {load} on "
          f"{os.cpu_count()} CPU threads — a busier machine is slower, and a first edit also warms up", file=out)
    summary = [f"selftest: {f.mode} ≈ {duration(f.estimate_s)} for a 10 s item (scaled from {duration(f.probe_s)} "
               "measured)" for f in figures]
    device_line = f"device: {m.device} ({'auto' if device in (None, 'auto') else 'asked for'}), weights {weights}"
    model_line = f"model: {m.name} (family {type(m).__name__}, window {m.max_seconds:g} s, modes {', '.join(m.modes)})"
    print("", file=out)
    for line in report_block(model_line, device_line, summary):
        print(line, file=out)
    return 0 if figures else 1


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="aiedit selftest",
                                 description="Measure how long a preview and a deep edit of a 10 s item take here.")
    ap.add_argument("--model", default="auto", help="model name or folder (default: auto, as aiedit serve)")
    ap.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N | mps (default: auto)")
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    return ap


def main(argv: list[str] | None = None) -> int:
    import logging

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="aiedit: %(message)s")
    return run(args.model, args.device, args.precision)


if __name__ == "__main__":
    raise SystemExit(main())
