"""Bridge benchmarks (not a test): start-to-first-pong, OSC ack latency while a job runs, jobs per minute.

    .venv/bin/python benchmarks/bench_bridge.py [--jobs 5] [--steps 20,20,10]

Runs the real daemon (``--model tiny``) in a subprocess on a temporary spool and talks to it over UDP.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bridge_helpers import Daemon, Listener, job_json, make_wav  # noqa: E402


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def bench_startup(tmp: Path, runs: int) -> list[float]:
    times = []
    for i in range(runs):
        d = Daemon(tmp / f"start{i}")
        times.append(d.started_in)
        d.stop()
    return times


def bench_ack_latency(d: Daemon, src: Path, n: int) -> tuple[list[float], list[float], list[float]]:
    """Submit→ack and ping→pong round trips, then send→ack for ``n`` jobs sent back to back (no pause between
    sends, each timed from its own send), all while a long job keeps the worker busy."""
    acks, pongs = [], []
    with Listener(d.port) as osc:
        osc.send("/aiedit/job", job_json("busy", src, steps={"embed": 20000, "tune": 20000, "sample": 4}))
        osc.wait("/aiedit/ack", "busy", timeout=10)
        deadline = time.monotonic() + 120
        while not any(a == "/aiedit/progress" and x[1] == "embedding" for a, x in osc.events_for("busy")):
            if time.monotonic() > deadline:
                raise TimeoutError("the busy job never started")
            time.sleep(0.05)
        for i in range(n):
            t0 = time.perf_counter()
            osc.send("/aiedit/job", job_json(f"lat{i}", src, priority="batch"))
            osc.wait("/aiedit/ack", f"lat{i}", timeout=10)
            acks.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            osc.ping()
            pongs.append(time.perf_counter() - t0)
        sent: dict[str, float] = {}
        for i in range(n):
            sent[f"burst{i}"] = time.perf_counter()
            osc.send("/aiedit/job", job_json(f"burst{i}", src, priority="batch"))
        deadline = time.monotonic() + 60
        while not set(sent) <= set(got := osc.arrival_times("/aiedit/ack")):  # poll: a wait() per id would
            if time.monotonic() > deadline:  # rescan every event on each arrival and starve the receiver
                raise TimeoutError("the burst was not acknowledged")
            time.sleep(0.05)
        burst = [got[j] - t for j, t in sent.items()]
        for jid in [f"lat{i}" for i in range(n)] + list(sent):
            osc.send("/aiedit/cancel", jid)
        osc.send("/aiedit/cancel", "busy")
        osc.wait("/aiedit/cancelled", "busy", timeout=30)
    return acks, pongs, burst


def bench_throughput(d: Daemon, src: Path, n: int, steps: dict[str, int]) -> tuple[float, float]:
    """Seconds per job: cold edits (new seed each: stages 1-3) and re-takes (same seed, other etas: stage 3)."""
    with Listener(d.port) as osc:
        osc.send("/aiedit/job", job_json("warm", src, steps=steps, seed=999))  # load the model first
        osc.wait_end("warm", timeout=300)
        t0 = time.perf_counter()
        for i in range(n):
            osc.send("/aiedit/job", job_json(f"cold{i}", src, steps=steps, seed=i))
            osc.wait_end(f"cold{i}", timeout=300)
        cold = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        for i in range(n):
            osc.send("/aiedit/job", job_json(f"retake{i}", src, steps=steps, seed=0, etas=[0.2 + 0.1 * i, 0.9]))
            address, args = osc.wait_end(f"retake{i}", timeout=300)
            assert address == "/aiedit/done", args
        retake = (time.perf_counter() - t0) / n
    return cold, retake


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=3, help="daemon starts to time")
    ap.add_argument("--acks", type=int, default=100, help="jobs submitted while busy")
    ap.add_argument("--only-acks", action="store_true", help="skip the start-up and throughput series")
    ap.add_argument("--jobs", type=int, default=5, help="jobs per throughput series")
    ap.add_argument("--steps", default="20,20,10", help="embed,tune,sample steps per job")
    args = ap.parse_args(argv)
    e, t, s = (int(x) for x in args.steps.split(","))
    with tempfile.TemporaryDirectory(prefix="aiedit-bench-") as tmpdir:
        tmp = Path(tmpdir)
        src = make_wav(tmp / "src.wav", seconds=2.0)
        starts = [0.0] if args.only_acks else bench_startup(tmp, args.starts)
        with Daemon(tmp / "spool") as d:
            acks, pongs, burst = bench_ack_latency(d, src, args.acks)
            cold, retake = (float("nan"), float("nan")) if args.only_acks else bench_throughput(
                d, src, args.jobs, {"embed": e, "tune": t, "sample": s})
    ms = 1000.0
    rows = [
        ("serve start → first pong", f"median {statistics.median(starts):.2f} s", f"max {max(starts):.2f} s"),
        ("job → ack while a job runs", f"p50 {pct(acks, .5) * ms:.1f} ms", f"p99 {pct(acks, .99) * ms:.1f} ms"),
        (f"job → ack, {args.acks}-job burst while a job runs", f"p50 {pct(burst, .5) * ms:.1f} ms",
         f"p99 {pct(burst, .99) * ms:.1f} ms"),
        ("ping → pong while a job runs", f"p50 {pct(pongs, .5) * ms:.1f} ms", f"p99 {pct(pongs, .99) * ms:.1f} ms"),
        (f"cold edit (2 s clip, steps {args.steps}, 2 takes)", f"{cold:.2f} s/job", f"{60 / cold:.1f} jobs/min"),
        ("cached re-take (same seed, other η)", f"{retake:.2f} s/job", f"{60 / retake:.1f} jobs/min"),
    ]
    w = max(len(r[0]) for r in rows)
    print(f"\n{'bridge benchmark (tiny model, CPU)':<{w}}  {'':<18}  ")
    for name, a, b in rows:
        print(f"{name:<{w}}  {a:<18}  {b}")
    print(json.dumps({"starts_s": starts, "ack_p50_ms": pct(acks, .5) * ms, "ack_p99_ms": pct(acks, .99) * ms,
                      "burst_p50_ms": pct(burst, .5) * ms, "burst_p99_ms": pct(burst, .99) * ms,
                      "cold_s": cold, "retake_s": retake}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
