"""The flow previews on a CPU, at real size: real-size Stable Audio 3 small (random weights, built as
``benchmarks/gpu.py`` builds it) edits one clip with diffusers' own ``StableAudio3AudioToAudioPipeline``, our
``sdedit`` and our ``flowedit``, at equal settings (guidance off, the pipeline's 8 steps for SDEdit), in one process,
warm, rounds interleaved; the table gives medians and their ratios to our SDEdit within this run.

    OMP_NUM_THREADS=2 python -m benchmarks preview [--seconds 5] [--strength 0.6] [--rounds 2] [--json PATH]

Rows (every one end to end: the input encoded, the DiT calls, the take decoded):
- diffusers ``StableAudio3AudioToAudioPipeline`` (``init_noise_level`` = strength, 8 steps);
- ours, ``sdedit`` at the strength (the same 8 calls);
- ours, ``flowedit`` at the strength with this device's defaults (``engine.flowedit``: on a CPU 1 noise draw, the
  strongest take runs 6 steps) — the preview a CPU can afford (issue 25);
- ours, ``flowedit`` with the paper's settings (28 steps, 2 draws batched: the CUDA defaults; before issue 25 the
  CPU ran these too).
``--strengths`` adds the same three of ours for several strengths in one request (the flow models' defaults).
Needs ≈ 4 GB of RSS (the DiT, SAME-S and T5Gemma-b in fp32).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks preview", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="clip length")
    ap.add_argument("--strength", type=float, default=0.6, help="the one strength of the single-take rows")
    ap.add_argument("--strengths", default=None,
                    help="also one request with these strengths, comma-separated (e.g. the flow defaults)")
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds after the warm-up (median reported)")
    ap.add_argument("--model", default="sa3-small", choices=("sa3-small", "sa3-medium"))
    ap.add_argument("--smoke", action="store_true", help="the tiny SA3 instead, 0.5 s, 1 round (CI keeps this alive)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.smoke:
        a.seconds, a.rounds = min(a.seconds, 0.5), 1

    from diffusers import StableAudio3AudioToAudioPipeline

    from benchmarks.gpu import build_sa3, clip, machine
    from engine.editor import Editor
    from engine.flowedit import DEFAULT_STEPS, NOISE_DRAWS
    from engine.models.stable_audio3 import pipeline_of, tiny_stable_audio3
    from engine.params import EditParams, EditRequest

    t0 = time.perf_counter()
    model = tiny_stable_audio3() if a.smoke else build_sa3(a.model, "cpu")
    size = "tiny (smoke)" if a.smoke else "real size"
    print(f"built {a.model} ({size}, random weights) in {time.perf_counter() - t0:.1f} s; {machine('cpu')}; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    editor = Editor(model)
    pipe = pipeline_of(model, StableAudio3AudioToAudioPipeline)
    prompt = "a dog barking in a large hall"
    wave = clip(a.seconds)  # (frames, 2) at 44.1 kHz
    audio = torch.from_numpy(wave.T.copy())[None]
    rows: dict[str, list[float]] = {}
    calls: dict[str, dict] = {}

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "clip.wav"
        sf.write(src, wave, 44100)

        def ours(label: str, params: EditParams, draws: int | None = None) -> None:
            editor.flowedit_draws = draws
            t = time.perf_counter()
            res = editor.edit(EditRequest(str(src), params=params))
            rows.setdefault(label, []).append(time.perf_counter() - t)
            calls[label] = {"network_calls": res.network_calls, "sample_steps": res.params["sample_steps"],
                            "noise_draws": res.params.get("noise_draws")}

        def theirs(label: str) -> None:
            t = time.perf_counter()
            pipe(prompt, duration=a.seconds, audio=audio, init_noise_level=a.strength, num_inference_steps=8,
                 generator=torch.Generator().manual_seed(0))
            rows.setdefault(label, []).append(time.perf_counter() - t)

        s = a.strength
        plan = [("diffusers StableAudio3AudioToAudioPipeline", lambda lab: theirs(lab)),
                ("ours sdedit", lambda lab: ours(lab, EditParams(prompt, etas=(s,), mode="sdedit"))),
                ("ours flowedit (CPU preview)", lambda lab: ours(lab, EditParams(prompt, etas=(s,), mode="flowedit"))),
                (f"ours flowedit ({DEFAULT_STEPS} steps, {NOISE_DRAWS} draws)",
                 lambda lab: ours(lab, EditParams(prompt, etas=(s,), mode="flowedit", sample_steps=DEFAULT_STEPS),
                                  draws=NOISE_DRAWS))]
        if a.strengths:
            many = tuple(float(x) for x in a.strengths.split(","))
            tag = "/".join(f"{x:g}" for x in many)
            plan += [(f"ours sdedit @ {tag}", lambda lab: ours(lab, EditParams(prompt, etas=many, mode="sdedit"))),
                     (f"ours flowedit (CPU preview) @ {tag}",
                      lambda lab: ours(lab, EditParams(prompt, etas=many, mode="flowedit")))]
        for label, run in plan:  # warm-up: one call of each, not timed
            run(label)
            rows[label].clear()
            print(f"  warmed up: {label}", flush=True)
        for r in range(a.rounds):
            for label, run in plan:
                run(label)
                print(f"  round {r + 1}: {label:<44} {rows[label][-1]:6.2f} s  (load {os.getloadavg()[0]:.2f})",
                      flush=True)
    def base(label: str) -> float:  # our SDEdit with the same strengths
        tag = label.partition(" @ ")[2]
        return statistics.median(rows["ours sdedit" + (f" @ {tag}" if tag else "")])

    print(f"\n{a.model} {size} on {machine('cpu')}, {a.seconds:g} s stereo clip, strength {s:g}, guidance off, "
          f"median of {a.rounds} warm rounds, load {os.getloadavg()[0]:.2f}\n")
    print(f"| {'what':<48} | wall (s) | × our sdedit | sequential calls (grid steps, draws) |")
    print(f"|{'-' * 50}|---|---|---|")
    out = []
    for label, times in rows.items():
        med = statistics.median(times)
        c = calls.get(label)
        shape = (f"{sum(c['network_calls'].values())} ({c['sample_steps']}, {c['noise_draws'] or '-'})" if c
                 else "8 (8, -)")
        print(f"| {label:<48} | {med:8.2f} | {med / base(label):12.2f} | {shape} |")
        out.append({"what": label, "median_s": med, "runs_s": times, "ratio_to_sdedit": med / base(label),
                    **(c or {})})
    if a.json:
        Path(a.json).write_text(json.dumps({"model": a.model, "machine": machine("cpu"), "seconds": a.seconds,
                                            "strength": s, "rounds": a.rounds, "rows": out}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
