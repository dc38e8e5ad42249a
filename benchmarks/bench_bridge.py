"""Bridge benchmarks (not a test): start-to-first-pong, OSC ack latency while a job runs, jobs per minute; and
(``--round2``, issue 20) the answering thread's time for a 16-status datagram with 0, 1,000 and 10,000 queued
jobs, and acks under a valid job flood.

    .venv/bin/python benchmarks/bench_bridge.py [--jobs 5] [--steps 20,20,10]
    .venv/bin/python benchmarks/bench_bridge.py --round2 [--queued 0,1000,10000] [--flood-rate 100] [--flood-s 60]
    .venv/bin/python -m benchmarks.bench_bridge --round3 [--idle-s 5] [--probe-rate 4] [--probe-s 20] [--cancel-s 60]

A full run (no series flag) ends with the round-3 series (issue 26): the daemon's CPU after one datagram aimed at
its own port, another client's ping round trips under a flood of probe-heavy jobs, and the spool's growth under
submit-then-cancel at full speed.

Runs the real daemon (``--model tiny``) in a subprocess on a temporary spool and talks to it over UDP.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bridge_helpers import Daemon, Listener, job, job_json, make_wav, seed_queued_jobs  # noqa: E402
from pythonosc.osc_message_builder import OscMessageBuilder  # noqa: E402

LONG = {"embed": 20000, "tune": 20000, "sample": 4}


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


def _osc(address: str) -> bytes:
    return OscMessageBuilder(address).build().dgram


def _wait_running(d: Daemon, jid: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while (d.status(jid) or {}).get("stage") not in ("embedding", "finetune"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{jid} never started")
        time.sleep(0.05)


def bench_status_datagram(tmp: Path, src: Path, queued: int, repeats: int) -> dict[str, float]:
    """A 16-message bundle of /aiedit/status with ``queued`` jobs waiting behind a running one: the time until a
    ping sent right behind it is answered (the answering thread is back) and until all 16 answers arrived."""
    spool = tmp / f"status{queued}"
    seed_queued_jobs(spool, src, queued, first=job("blocker", src, steps=LONG))
    t0 = time.perf_counter()
    d = Daemon(spool, "--max-queued", str(queued + 100), start=False).start(timeout=600)
    start_s = time.perf_counter() - t0
    back, all16 = [], []
    elements = [_osc("/aiedit/status")] * 16
    datagram = b"#bundle\x00" + b"\x00" * 7 + b"\x01" + b"".join(struct.pack(">i", len(e)) + e for e in elements)
    try:
        _wait_running(d, "blocker")
        with Listener(d.port) as osc:
            for _ in range(repeats):
                with osc._cond:
                    osc.events.clear()
                    osc.times.clear()
                t0 = time.perf_counter()
                osc.send_raw(datagram)
                osc.send("/aiedit/ping")
                osc.wait("/aiedit/pong", timeout=120)
                deadline = time.monotonic() + 120
                while sum(a == "/aiedit/status" for a, _ in osc.events) < 16 and time.monotonic() < deadline:
                    time.sleep(0.001)
                with osc._cond:
                    got = list(zip(osc.events, osc.times, strict=True))
                back.append(next(t for (a, _), t in got if a == "/aiedit/pong") - t0)
                all16.append(max(t for (a, _), t in got if a == "/aiedit/status") - t0)
                time.sleep(0.3)
            osc.send("/aiedit/cancel", "blocker")
    finally:
        d.stop()
    return {"queued": queued, "start_s": start_s, "back_p50_ms": pct(back, .5) * 1000,
            "back_max_ms": max(back) * 1000, "all16_p50_ms": pct(all16, .5) * 1000, "all16_max_ms": max(all16) * 1000}


def bench_flood(tmp: Path, src: Path, rate: float, seconds: float) -> dict[str, float]:
    """Valid jobs at ``rate`` per second for ``seconds`` while a long job keeps the worker busy (default
    --max-queued): every job must get an ack or a "busy" refusal, and quickly."""
    d = Daemon(tmp / "flood")
    sent: dict[str, float] = {}
    try:
        with Listener(d.port) as osc:
            osc.send("/aiedit/job", job_json("blocker", src, steps=LONG))
            _wait_running(d, "blocker")
            n = int(rate * seconds)
            t_start = time.perf_counter()
            for i in range(n):
                due = t_start + i / rate
                while (now := time.perf_counter()) < due:
                    time.sleep(min(0.002, due - now))
                jid = f"f{i}"
                sent[jid] = time.perf_counter()
                osc.send("/aiedit/job", job_json(jid, src, priority="batch"))
            send_s = time.perf_counter() - t_start
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                acks, errors = osc.arrival_times("/aiedit/ack"), osc.arrival_times("/aiedit/error")
                if set(sent) <= set(acks) | set(errors):
                    break
                time.sleep(0.2)
            with osc._cond:
                busy = {args[0] for a, args in osc.events if a == "/aiedit/error" and str(args[1]).startswith("busy:")}
            osc.send("/aiedit/cancel", "blocker")
    finally:
        d.stop()
    ack_lat = [acks[j] - t for j, t in sent.items() if j in acks]
    busy_lat = [errors[j] - t for j, t in sent.items() if j in busy]
    silent = [j for j in sent if j not in acks and j not in errors]
    answered = ack_lat + busy_lat
    return {"rate": rate, "seconds": seconds, "send_s": send_s, "sent": len(sent), "acked": len(ack_lat),
            "busy": len(busy_lat), "other_errors": len(errors) - len(busy_lat), "silent": len(silent),
            "ack_p50_ms": pct(ack_lat, .5) * 1000 if ack_lat else float("nan"),
            "ack_p99_ms": pct(ack_lat, .99) * 1000 if ack_lat else float("nan"),
            "busy_p99_ms": pct(busy_lat, .99) * 1000 if busy_lat else float("nan"),
            "answer_p99_ms": pct(answered, .99) * 1000 if answered else float("nan")}


# -- round 3 (issue 26): a reply loop, a probe-heavy flood, submit-then-cancel ---------------------------------------


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cores(pid: int, window_s: float) -> float:
    before = _cpu_s(pid)
    time.sleep(window_s)
    return (_cpu_s(pid) - before) / window_s


def bench_self_loop(tmp: Path, window_s: float) -> dict[str, float]:
    """The daemon's CPU over a window while idle, then after one ``/aiedit/ping [127.0.0.1, its own port]``."""
    d = Daemon(tmp / "selfloop")
    try:
        time.sleep(1.0)
        idle = _cores(d.proc.pid, window_s)
        with Listener(d.port) as osc:
            osc.send("/aiedit/ping", "127.0.0.1", d.port)
            time.sleep(1.0)
            after = _cores(d.proc.pid, window_s)
            answers = [a for a, _ in osc.events]
    finally:
        d.stop()
    return {"window_s": window_s, "idle_cores": idle, "after_cores": after, "answers": len(answers)}


def heavy_wav(path: Path, chunks: int = 100_000) -> Path:
    """A WAV whose header is followed by ``chunks`` empty chunks: libsndfile walks them all to probe it."""
    fmt = struct.pack("<HHIIHH", 1, 1, 16_000, 32_000, 2, 16)
    data = b"\0\0" * 8000
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + (b"junk" + b"\0\0\0\0") * chunks
            + b"data" + struct.pack("<I", len(data)) + data)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def bench_probe_flood(tmp: Path, rate: float, seconds: float) -> dict[str, float]:
    """``rate`` datagrams a second, each 16 jobs whose source is a probe-heavy WAV, for ``seconds``; meanwhile
    another client pings every 20 ms and waits for each pong: its round trips."""
    import soundfile as sf

    heavy = heavy_wav(tmp / "heavy.wav")
    t0 = time.perf_counter()
    with contextlib.suppress(Exception):
        sf.info(str(heavy))  # what the daemon's probe does (libsndfile walks every chunk)
    probe_ms = (time.perf_counter() - t0) * 1000
    d = Daemon(tmp / "probeflood")
    rtts: list[float] = []
    lost = 0
    stop = threading.Event()
    sent = [0]

    def flood() -> None:
        with Listener(d.port) as fl:
            i, start = 0, time.perf_counter()
            while not stop.is_set():
                due = start + sent[0] / rate
                if time.perf_counter() < due:
                    time.sleep(min(0.005, due - time.perf_counter()))
                    continue
                elements = [_osc_job(job_json(f"h{i + k:06d}", heavy)) for k in range(16)]
                i += 16
                fl.send_raw(b"#bundle\x00" + b"\x00" * 7 + b"\x01"
                            + b"".join(struct.pack(">i", len(e)) + e for e in elements))
                sent[0] += 1
            time.sleep(1.0)
            flood_answers[0] = len(fl.events)

    flood_answers = [0]
    try:
        th = threading.Thread(target=flood, daemon=True)
        th.start()
        with Listener(d.port) as other:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                t = time.perf_counter()
                try:
                    other.ping(timeout=2.0)
                    rtts.append(time.perf_counter() - t)
                except TimeoutError:
                    lost += 1
                time.sleep(0.02)
        stop.set()
        th.join(10)
    finally:
        d.stop()
    return {"rate": rate, "seconds": seconds, "datagrams": sent[0], "jobs": sent[0] * 16, "probe_ms": probe_ms,
            "flood_answers": flood_answers[0], "pings": len(rtts), "lost": lost,
            "ping_p50_ms": pct(rtts, .5) * 1000, "ping_p99_ms": pct(rtts, .99) * 1000, "ping_max_ms": max(rtts) * 1000}


def _osc_job(text: str) -> bytes:
    b = OscMessageBuilder("/aiedit/job")
    b.add_arg(text)
    return b.build().dgram


def _disk_bytes(root: Path) -> tuple[int, int, int]:
    """(bytes on disk, bytes of content, job folders) under ``root``."""
    disk = content = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                disk += st.st_blocks * 512
                content += st.st_size
    jobs = root / "jobs"
    return disk, content, sum(1 for _ in jobs.iterdir()) if jobs.is_dir() else 0


def bench_submit_cancel(tmp: Path, src: Path, seconds: float, pad: int) -> dict[str, float]:
    """One client submits a job padded with ``pad`` bytes of unknown fields and cancels it, at full speed (no
    waiting for answers), for ``seconds``, while a long job keeps the worker busy: how much the spool and the
    daemon's memory grow."""
    d = Daemon(tmp / "subcancel")
    counts = {"acked": 0, "busy": 0}

    def tally(osc: Listener) -> None:  # keeps the listener's memory flat: only counts matter here
        with osc._cond:
            counts["acked"] += sum(a == "/aiedit/ack" for a, _ in osc.events)
            counts["busy"] += sum(a == "/aiedit/error" and str(x[1]).startswith("busy:") for a, x in osc.events)
            osc.events.clear()
            osc.times.clear()

    try:
        with Listener(d.port) as osc:
            osc.send("/aiedit/job", job_json("blocker", src, steps=LONG))
            _wait_running(d, "blocker")
            osc.ping()
            disk0, content0, _ = _disk_bytes(d.spool)
            rss0 = _rss_mb(d.proc.pid)
            padding = "p" * pad
            n, t0 = 0, time.monotonic()
            while time.monotonic() - t0 < seconds:
                jid = f"s{n:07d}"
                osc.send("/aiedit/job", job_json(jid, src, priority="batch", padding=padding))
                osc.send("/aiedit/cancel", jid)
                n += 1
                if n % 50 == 0:
                    tally(osc)
            elapsed = time.monotonic() - t0
            time.sleep(2.0)  # the history trimmed by the main loop
            tally(osc)
            counts["acked"] -= 1  # the blocker's
            disk1, content1, folders = _disk_bytes(d.spool)
            rss1 = _rss_mb(d.proc.pid)
            osc.send("/aiedit/cancel", "blocker")
    finally:
        d.stop()
    return {"seconds": elapsed, "pad": pad, "submitted": n, "acked": counts["acked"], "busy": counts["busy"],
            "grown_disk_mb": (disk1 - disk0) / 1e6, "grown_content_mb": (content1 - content0) / 1e6,
            "job_folders": folders, "rss_grown_mb": rss1 - rss0}



def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main_round3(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="aiedit-bench3-") as tmpdir:
        tmp = Path(tmpdir)
        src = make_wav(tmp / "src.wav", seconds=0.5)
        loop = bench_self_loop(tmp, args.idle_s)
        flood = bench_probe_flood(tmp, args.probe_rate, args.probe_s)
        sub = bench_submit_cancel(tmp, src, args.cancel_s, args.pad)
    print("\nround 3 (issue 26), tiny model, CPU")
    print(f"{'series':<58}  {'figure':<28}  target")
    rows = [
        (f"daemon CPU over {loop['window_s']:g} s, idle", f"{loop['idle_cores']:.3f} cores", ""),
        ("... after one /aiedit/ping aimed at its own port", f"{loop['after_cores']:.3f} cores "
         f"({loop['answers']} answer)", "< 0.05 cores"),
        (f"another client's ping, {flood['rate']:g} probe-heavy datagrams/s (16 jobs each)",
         f"p50 {flood['ping_p50_ms']:.1f} ms, p99 {flood['ping_p99_ms']:.1f} ms", "p99 < 50 ms"),
        ("... worst ping, pings lost", f"{flood['ping_max_ms']:.1f} ms, {flood['lost']} lost", ""),
        ("... one probe of that WAV (in this process)", f"{flood['probe_ms']:.1f} ms", ""),
        (f"submit+cancel at full speed for {sub['seconds']:.0f} s ({sub['pad'] // 1000} KB of padding each)",
         f"spool +{sub['grown_disk_mb']:.1f} MB on disk", "< 60 MB"),
        ("... jobs submitted / acked / refused busy", f"{sub['submitted']} / {sub['acked']} / {sub['busy']}", ""),
        ("... job folders at the end, daemon RSS growth", f"{sub['job_folders']}, {sub['rss_grown_mb']:+.1f} MB", ""),
    ]
    for name, fig, target in rows:
        print(f"{name:<58}  {fig:<28}  {target}")
    print(json.dumps({"self_loop": loop, "probe_flood": flood, "submit_cancel": sub}))
    return 0


def main_round2(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="aiedit-bench2-") as tmpdir:
        tmp = Path(tmpdir)
        src = make_wav(tmp / "src.wav", seconds=0.5)
        status = [bench_status_datagram(tmp, src, int(q), args.repeats) for q in args.queued.split(",")]
        flood = bench_flood(tmp, src, args.flood_rate, args.flood_s) if args.flood_s > 0 else None
    print("\n16-status datagram while a job runs (answering thread back = a ping sent right behind it answered)")
    print(f"{'queued':>7}  {'daemon start':>12}  {'back p50':>9}  {'back max':>9}  {'16 answers p50':>14}  "
          f"{'16 answers max':>14}")
    for r in status:
        print(f"{r['queued']:>7}  {r['start_s']:>10.1f} s  {r['back_p50_ms']:>6.1f} ms  {r['back_max_ms']:>6.1f} ms  "
              f"{r['all16_p50_ms']:>11.1f} ms  {r['all16_max_ms']:>11.1f} ms")
    if flood:
        print(f"\nvalid job flood, {flood['rate']:g} jobs/s for {flood['seconds']:g} s while a job runs "
              f"(default --max-queued 1000)")
        for k in ("sent", "acked", "busy", "other_errors", "silent"):
            print(f"  {k:<13} {flood[k]}")
        print(f"  ack p50 {flood['ack_p50_ms']:.1f} ms, ack p99 {flood['ack_p99_ms']:.1f} ms, busy p99 "
              f"{flood['busy_p99_ms']:.1f} ms, any answer p99 {flood['answer_p99_ms']:.1f} ms "
              f"(sending took {flood['send_s']:.1f} s)")
    print(json.dumps({"status": status, "flood": flood}))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=3, help="daemon starts to time")
    ap.add_argument("--acks", type=int, default=100, help="jobs submitted while busy")
    ap.add_argument("--only-acks", action="store_true", help="skip the start-up and throughput series")
    ap.add_argument("--jobs", type=int, default=5, help="jobs per throughput series")
    ap.add_argument("--steps", default="20,20,10", help="embed,tune,sample steps per job")
    ap.add_argument("--round2", action="store_true", help="only the issue-20 series: status datagram, job flood")
    ap.add_argument("--queued", default="0,1000,10000", help="queue lengths for the status-datagram series")
    ap.add_argument("--repeats", type=int, default=5, help="status datagrams per queue length")
    ap.add_argument("--flood-rate", type=float, default=100.0, help="jobs per second in the flood")
    ap.add_argument("--flood-s", type=float, default=60.0, help="seconds of flood (0: skip)")
    ap.add_argument("--round3", action="store_true",
                    help="only the issue-26 series: a reply loop, a probe-heavy flood, submit+cancel")
    ap.add_argument("--no-round3", action="store_true", help="skip the issue-26 series in a full run")
    ap.add_argument("--idle-s", type=float, default=5.0, help="CPU window of the reply-loop series")
    ap.add_argument("--probe-rate", type=float, default=4.0, help="probe-heavy datagrams per second")
    ap.add_argument("--probe-s", type=float, default=20.0, help="seconds of probe-heavy flood")
    ap.add_argument("--cancel-s", type=float, default=60.0, help="seconds of submit+cancel")
    ap.add_argument("--pad", type=int, default=50_000, help="bytes of unknown fields in each submitted job")
    args = ap.parse_args(argv)
    if args.round2:
        return main_round2(args)
    if args.round3:
        return main_round3(args)
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
    if not args.no_round3 and not args.only_acks:
        main_round3(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
