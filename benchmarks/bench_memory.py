"""A job's peak memory, estimated (``engine.memory``) and measured, on the shipped toy models.

    python -m benchmarks.bench_memory [--quick] [--models toy,toy-flow] [--out FILE.json]

Each job runs in a child process of its own, as a daemon worker runs it: the model loaded (with its CLAP scorer),
the region read (``engine.audio_io.read_source``), ``Editor.edit``, every take written as a float WAV. The job's
memory is the child's peak resident set during the job less its resident set just before (the kernel's peak is
reset there: ``/proc/self/clear_refs``), so the loaded model and torch's runtime are not counted, as
``--max-job-mb`` does not count them. Step counts are small: a job's memory does not grow with its steps, and
long clips cost one edit per window. Not a timed test: the figures depend on the allocator, not on the load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = {"embed_steps": 2, "tune_steps": 2, "sample_steps": 3}

# (model, mode, seconds, rate, channels, takes): lengths, strengths and modes a REAPER user sends
CASES = [
    ("toy", "lora", 5.0, 44100, 2, 1),
    ("toy", "lora", 30.0, 44100, 2, 4),
    ("toy", "lora", 120.0, 44100, 2, 4),
    ("toy", "sdedit", 60.0, 48000, 2, 8),
    ("toy", "zeta", 30.0, 16000, 1, 4),
    ("toy", "full", 10.0, 44100, 2, 2),
    ("toy", "lora", 30.0, 96000, 6, 2),
    ("toy-flow", "lora", 5.0, 44100, 2, 1),
    ("toy-flow", "lora", 30.0, 44100, 2, 4),
    ("toy-flow", "flowedit", 120.0, 44100, 2, 4),
    ("toy-flow", "sdedit", 60.0, 48000, 2, 8),
    ("toy-flow", "flowedit", 30.0, 22050, 1, 8),
    ("toy-flow", "full", 10.0, 44100, 2, 2),
]
QUICK = [c for c in CASES if c[2] <= 30.0]


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def child(case: list) -> dict:
    """Run one job in this process; its memory beyond the loaded model."""
    import numpy as np
    import soundfile as sf

    try:
        from engine.audio_io import read_source
    except ImportError:  # an engine from before issue 26 (the "before" figures): the editor reads the file itself
        read_source = None
    from engine.editor import load_editor
    from engine.params import EditParams, EditRequest, Region

    model, mode, seconds, rate, channels, takes = case
    editor = load_editor(model, device="cpu")
    with tempfile.TemporaryDirectory(prefix="aiedit-bench-memory-") as tmp:
        src = Path(tmp) / "src.wav"
        n = int(seconds * rate)
        t = np.arange(n, dtype=np.float32) / rate
        tone = (0.3 * np.sin(2 * np.pi * 330 * t) * ((t % 0.5) < 0.15)).astype(np.float32)
        with sf.SoundFile(str(src), "w", rate, channels, subtype="PCM_24") as f:
            for c0 in range(0, n, 1 << 20):
                block = tone[c0:c0 + (1 << 20)]
                f.write(np.repeat(block[:, None], channels, axis=1) * np.linspace(1, 0.6, channels, dtype=np.float32))
        del t, tone
        etas = tuple(float(x) for x in np.linspace(0.2, 0.9, takes))
        params = EditParams("a wooden door knock", etas=etas, mode=mode, **STEPS)
        request = EditRequest(str(src), Region(), params)
        import gc

        gc.collect()
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # the peak resident set starts again from the current one
        before = _status()["VmRSS"]
        t0 = time.perf_counter()
        if read_source is not None:
            audio = read_source(src, Region())
            result = editor.edit(request, audio=audio)
            del audio
        else:
            result = editor.edit(request)
        for i, take in enumerate(result.takes):
            sf.write(str(Path(tmp) / f"take{i}.wav"), np.asarray(take.audio, dtype=np.float32), result.sample_rate,
                     subtype="FLOAT")
        peak = _status()["VmHWM"]
        return {"before": before, "peak": peak, "job": peak - before, "seconds": time.perf_counter() - t0,
                "windows": result.windows}


def estimate(case: list) -> int:
    from engine.memory import JobShape, estimate_job_bytes

    model, mode, seconds, rate, channels, takes = case
    return estimate_job_bytes(JobShape(frames=int(seconds * rate), channels=channels, sample_rate=rate, takes=takes,
                                       mode=mode), model).total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_memory")
    ap.add_argument("--quick", action="store_true", help="clips up to 30 s only")
    ap.add_argument("--models", default="toy,toy-flow")
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(json.loads(a.child))))
        return 0
    if not os.path.exists("/proc/self/clear_refs"):
        print("bench_memory needs Linux (/proc/self/clear_refs resets the peak resident set)")
        return 2
    models = set(a.models.split(","))
    cases = [c for c in (QUICK if a.quick else CASES) if c[0] in models]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONPATH": str(ROOT)}
    print(f"job memory, estimated vs measured (peak RSS during the job less RSS before it), {platform.machine()}, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    head = f"{'model':9} {'mode':8} {'s':>5} {'Hz':>6} {'ch':>2} {'takes':>5} {'win':>4} {'takes MB':>9} " \
           f"{'est MB':>8} {'meas MB':>8} {'est/meas':>8}"
    print(head)
    rows = []
    for case in cases:
        r = subprocess.run([sys.executable, "-m", "benchmarks.bench_memory", "--child", json.dumps(case)], cwd=ROOT,
                           env=env, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"{case}: child failed: {r.stderr.strip().splitlines()[-1:]}")
            continue
        got = json.loads(r.stdout.strip().splitlines()[-1])
        est = estimate(case)
        model, mode, seconds, rate, channels, takes = case
        out_mb = seconds * rate * channels * takes * 4 / 1e6
        row = {"model": model, "mode": mode, "seconds": seconds, "rate": rate, "channels": channels, "takes": takes,
               "windows": got["windows"], "takes_mb": out_mb, "estimate_mb": est / 1e6, "measured_mb": got["job"] / 1e6,
               "ratio": est / max(got["job"], 1)}
        rows.append(row)
        print(f"{model:9} {mode:8} {seconds:5.0f} {rate:6d} {channels:2d} {takes:5d} {got['windows']:4d} "
              f"{out_mb:9.0f} {row['estimate_mb']:8.0f} {row['measured_mb']:8.0f} {row['ratio']:8.2f}", flush=True)
    if rows:
        ratios = [r["ratio"] for r in rows]
        print(f"estimate / measured: {min(ratios):.2f} to {max(ratios):.2f}")
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
