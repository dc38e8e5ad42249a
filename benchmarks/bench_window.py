"""Peak memory of one pass over a long window, per minute of audio, on the CPU (issue 25: one pass per model window).

    OMP_NUM_THREADS=1 python -m benchmarks window [--models tiny-sa3,toy-flow] [--seconds 15,30,60,120]
        [--modes sdedit,flowedit,lora] [--whole-codec] [--json PATH]

Each (model, length, mode) runs in a fresh process (peak RSS is per process): the model is loaded with its window
opened to the longest length (toy-flow's own is 2.56 s, the clips it was trained on; real SA3 small takes 120 s in
one pass, which is what this measures the cost of), its RSS noted, then one edit of a stereo clip of that length
(sdedit: 2 steps; flowedit: the CPU preview's one draw, 2 steps; lora: 1 embedding and 1 LoRA step and 2 sampling
steps: the backward's activations). The table gives the peak above the loaded model and its growth per minute
between the lengths. ``--whole-codec`` runs SA3's codec on the whole window in one call (as before issue 25):
diffusers' SAME builds a dense band mask over the whole clip, so memory grows with the square of the length.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def one(model: str, seconds: float, mode: str, whole_codec: bool) -> dict:
    """In this process: load, note RSS, edit once, note the peak (ru_maxrss, KiB on Linux)."""
    import resource
    import time

    import numpy as np
    import soundfile as sf

    from engine.editor import load_editor
    from engine.models import stable_audio3
    from engine.params import EditParams, EditRequest

    if whole_codec:
        stable_audio3.CODEC_CHUNK = 1 << 30
    ed = load_editor(model, device="cpu", scorer=None)
    ed.model.max_seconds = max(ed.model.max_seconds, seconds)
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sr = ed.model.sample_rate
    t = np.arange(int(seconds * sr)) / sr
    wave = np.stack([0.3 * np.sin(2 * np.pi * 330 * t) * ((t % 0.5) < 0.1), 0.2 * np.sin(2 * np.pi * 495 * t)], 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.wav"
        sf.write(path, wave.astype(np.float32), sr)
        params = EditParams("a bell", mode=mode, etas=(0.9,), sample_steps=2, embed_steps=1, tune_steps=1)
        t0 = time.perf_counter()
        res = ed.edit(EditRequest(str(path), params=params))
        wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"model": model, "seconds": seconds, "mode": mode, "whole_codec": whole_codec, "windows": res.windows,
            "loaded_mib": round(loaded, 1), "peak_mib": round(peak, 1), "above_mib": round(peak - loaded, 1),
            "wall_s": round(wall, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks window", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="tiny-sa3,toy-flow")
    ap.add_argument("--seconds", default="15,30,60,120")
    ap.add_argument("--modes", default="sdedit,flowedit,lora")
    ap.add_argument("--whole-codec", action="store_true", help="SA3's codec on the whole window (before issue 25)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # model:seconds:mode, in a child process
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.one:
        model, seconds, mode = a.one.split(":")
        print(json.dumps(one(model, float(seconds), mode, a.whole_codec)), flush=True)
        return 0
    rows = []
    lengths = [float(s) for s in a.seconds.split(",")]
    for model in a.models.split(","):
        for mode in a.modes.split(","):
            for seconds in lengths:
                cmd = [sys.executable, "-m", "benchmarks.bench_window", "--one", f"{model}:{seconds:g}:{mode}"]
                if a.whole_codec:
                    cmd.append("--whole-codec")
                done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
                if done.returncode != 0:
                    rows.append({"model": model, "seconds": seconds, "mode": mode, "error": done.stderr[-300:]})
                    print(f"  {model} {mode} {seconds:g} s: failed ({done.stderr.strip().splitlines()[-1:]})",
                          flush=True)
                    continue
                row = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"  {model:9s} {mode:9s} {seconds:6g} s  {row['windows']} window  loaded {row['loaded_mib']:7.1f}"
                      f" MiB  peak {row['peak_mib']:7.1f} MiB  (+{row['above_mib']:.1f})  {row['wall_s']:.1f} s",
                      flush=True)
                if a.json:
                    Path(a.json).write_text(json.dumps(rows, indent=1))
    print(f"\n| model | mode | {' | '.join(f'{s:g} s' for s in lengths)} | growth per minute |")
    print(f"|---|---|{'---|' * len(lengths)}---|")
    for model in a.models.split(","):
        for mode in a.modes.split(","):
            got = [r for r in rows if r["model"] == model and r["mode"] == mode and "above_mib" in r]
            cells = [next((f"{r['above_mib']:.0f} MiB" for r in got if r["seconds"] == s), "—") for s in lengths]
            slope = "—"
            if len(got) >= 2:
                first, last = got[0], got[-1]
                minutes = (last["seconds"] - first["seconds"]) / 60
                slope = f"{(last['above_mib'] - first['above_mib']) / minutes:.0f} MiB"
            print(f"| {model} | {mode} | {' | '.join(cells)} | {slope} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
