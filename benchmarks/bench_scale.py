"""Scale benchmark (not a test): N short jobs sent at once to 1 and to 2 workers, and the Ray overhead per job.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks scale [--jobs 8] [--steps 20,20,10] [--no-ray] [--with-threads]
        [--devices cuda:0,cuda:1] [--model toy]

Runs the real daemon (``--model tiny``) in a subprocess on a temporary spool and talks to it over UDP, as
``bench_bridge`` does. Rows: one worker (1 torch thread); with ``--with-threads`` one worker with 2 torch threads
(the other way to use a second core); two workers (``--devices cpu,cpu``, 1 thread each); then ``--ray local
--devices cpu,cpu`` (two Ray actors), whose per-job overhead the daemon logs: submit → the actor starts the edit,
and the actor's result → the takes written by the daemon (transfer included).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bridge_helpers import Daemon, Listener, job_json, make_wav  # noqa: E402

OVERHEAD = re.compile(r"submit→start ([0-9.]+) s, result→takes written ([0-9.]+) s")


def wait_idle(d: Daemon, n: int, timeout: float = 600.0) -> None:
    """Until daemon.json shows ``n`` idle workers (models loaded: the timing leaves loading out)."""
    deadline = time.monotonic() + timeout
    while [w["state"] for w in (d.daemon_json() or {}).get("workers", [])] != ["idle"] * n:
        if not d.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"workers not ready: {d.daemon_json()} {d.stderr()[-2000:]}")
        time.sleep(0.2)


def run_batch(d: Daemon, src: Path, n: int, steps: dict[str, int], tag: str) -> tuple[float, set[str]]:
    """Seconds from sending ``n`` jobs at once to the last one done, and the workers that ran them."""
    with Listener(d.port) as osc:
        t0 = time.perf_counter()
        for i in range(n):
            osc.send("/aiedit/job", job_json(f"{tag}{i}", src, steps=steps, seed=i, priority="batch"))
        workers = set()
        for i in range(n):
            address, args = osc.wait_end(f"{tag}{i}", timeout=1800)
            if address != "/aiedit/done":
                raise RuntimeError(f"{tag}{i}: {address} {args}")
            workers.add(json.loads(args[1])["worker"])
        return time.perf_counter() - t0, workers


def series(tmp: Path, src: Path, name: str, args: list[str], workers: int, n: int, steps: dict[str, int],
           env: dict[str, str] | None = None) -> tuple[float, set[str], str]:
    with Daemon(tmp / name, *args, "--preload", env=env) as d:
        wait_idle(d, workers)
        run_batch(d, src, workers, steps, "warm")  # first edit per worker: lazy imports, allocator warm-up
        seconds, used = run_batch(d, src, n, steps, "job")
        time.sleep(0.3)
        return seconds, used, d.stderr()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=8, help="jobs per series, sent at once")
    ap.add_argument("--steps", default="20,20,10", help="embed,tune,sample steps per job")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray series")
    ap.add_argument("--devices", default="cpu,cpu", help="the two workers' devices (e.g. cuda:0,cuda:1 on a GPU "
                    "box); the one-worker series uses the first")
    ap.add_argument("--model", default="tiny", help="model to serve (default tiny: random weights)")
    ap.add_argument("--with-threads", action="store_true", help="add a series of 1 worker with 2 torch threads "
                    "(very slow on a busy CPU: OpenMP threads spin against other processes)")
    args = ap.parse_args(argv)
    e, t, s = (int(x) for x in args.steps.split(","))
    steps = {"embed": e, "tune": t, "sample": s}
    n = args.jobs
    rows: list[tuple[str, float, str]] = []
    result: dict[str, object] = {"jobs": n, "steps": args.steps}

    def row(name: str, secs: float, note: str = "") -> None:
        rows.append((name, secs, note))
        print(f"[scale] {name}: {secs:.1f} s, {60 * n / secs:.1f} jobs/min {note}", flush=True)

    with tempfile.TemporaryDirectory(prefix="aiedit-scale-") as tmpdir:
        tmp = Path(tmpdir)
        src = make_wav(tmp / "src.wav", seconds=2.0)
        devs = [d.strip() for d in args.devices.split(",")]
        if len(devs) != 2:
            ap.error("--devices: name two devices")
        common = ["--model", args.model]
        one, _, _ = series(tmp, src, "one", [*common, "--devices", devs[0]], 1, n, steps)
        row("1 worker, 1 torch thread", one)
        if args.with_threads:
            one2, _, _ = series(tmp, src, "one2", [*common, "--devices", devs[0], "--threads", "2"], 1, n, steps,
                                env={"OMP_NUM_THREADS": "2"})
            row("1 worker, 2 torch threads", one2, f"{one / one2:.2f}× the 1-thread rate")
            result.update(one_worker_2threads_s=one2)
        two, used, _ = series(tmp, src, "two", [*common, "--devices", args.devices], 2, n, steps)
        row(f"2 workers (--devices {args.devices}), 1 thread each; ran on {len(used)}", two,
            f"{one / two:.2f}× the 1-worker rate")
        result.update(one_worker_s=one, two_workers_s=two, ratio=one / two)
        overhead: list[tuple[float, float]] = []
        if not args.no_ray:
            try:
                import ray  # noqa: F401
            except ImportError:
                print("(skipping the Ray series: pip install 'aiedit[cluster]')")
            else:
                kinds = ",".join("cpu" if d == "cpu" else "cuda" for d in devs)
                ray_s, used, log = series(tmp, src, "ray", [*common, "--ray", "local", "--devices", kinds], 2, n,
                                          steps)
                row(f"2 Ray actors (--ray local --devices {kinds}); ran on {len(used)}", ray_s,
                    f"{one / ray_s:.2f}× the 1-worker rate")
                overhead = [(float(a), float(b)) for a, b in OVERHEAD.findall(log)]
                result.update(ray_s=ray_s, ray_overhead=overhead)
    w = max(len(r[0]) for r in rows)
    title = f"scale benchmark ({args.model} model, {args.devices})"
    print(f"\n{title:<{w}}  {n} jobs sent at once, steps {args.steps}, 2 s clip, 2 η")
    for name, secs, note in rows:
        print(f"{name:<{w}}  {secs:7.1f} s  {60 * n / secs:6.1f} jobs/min  {note}")
    if overhead:
        start = [a * 1000 for a, _ in overhead]
        wrote = [b * 1000 for _, b in overhead]
        print(f"Ray overhead per job ({len(overhead)} jobs, warm-up included): submit → start median "
              f"{statistics.median(start):.1f} ms (max {max(start):.1f}); result → takes written median "
              f"{statistics.median(wrote):.1f} ms (max {max(wrote):.1f})")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
