"""``python -m bridge.demo``: the whole loop a REAPER user sees, offline, in well under a minute on a CPU.

Generates a 3 s stereo clip of knocks, starts ``aiedit serve --model tiny`` on a demo spool, sends one job over OSC
exactly as the REAPER scripts do, prints progress as it arrives, then the takes with their scores, and stops the
daemon cleanly. The tiny model has random weights: the takes prove the plumbing, not the sound.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from bridge.client import OscClient, ping

ROOT = Path(__file__).resolve().parents[1]


def make_clip(path: Path, seconds: float = 3.0, sr: int = 44_100) -> Path:
    """Knocks (noise bursts through a decaying envelope) and two short beeps, stereo, 24-bit."""
    rng = np.random.default_rng(0)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    x = np.zeros(n)
    for onset in (0.2, 0.55, 0.9, 1.6, 1.95, 2.3):
        i = int(onset * sr)
        m = min(n - i, int(0.12 * sr))
        x[i:i + m] += 0.7 * rng.standard_normal(m) * np.exp(-np.arange(m) / (0.02 * sr))
    for onset, freq in ((1.25, 880.0), (2.65, 660.0)):
        i, m = int(onset * sr), int(0.1 * sr)
        x[i:i + m] += 0.3 * np.sin(2 * np.pi * freq * t[:m]) * np.hanning(m)
    stereo = np.stack([x, 0.8 * x], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(stereo, -1, 1), sr, subtype="PCM_24")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bridge.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/demo", help="folder for the clip and the demo spool")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--prompt", default="knocking on a wooden door")
    ap.add_argument("--steps", default="20,20,10", help="embed,tune,sample steps (small: it is a demo)")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    spool = out / f"spool-{int(time.time())}"
    clip = make_clip(out / "demo_input.wav")
    embed, tune, sample = (int(s) for s in args.steps.split(","))
    print(f"demo clip: {clip} (3.0 s, 44.1 kHz, stereo)")

    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    log = open(out / "daemon.stderr", "wb")
    daemon = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--model", args.model, "--port", "0",
                               "--spool", str(spool)], cwd=ROOT, env=env, stderr=log, stdout=log)
    t0 = time.monotonic()
    try:
        info = _wait_daemon(spool, daemon)
        port = int(info["port"])
        print(f"daemon pid {info['pid']} answers on 127.0.0.1:{port} after {time.monotonic() - t0:.2f} s")
        job = {"version": 1, "id": f"demo-{int(time.time())}", "source": {"path": str(clip)},
               "prompt": args.prompt, "etas": [0.3, 0.5, 0.7], "mode": "lora", "seed": 0, "label": "demo",
               "model": args.model, "steps": {"embed": embed, "tune": tune, "sample": sample}}
        with OscClient("127.0.0.1", port) as client:
            client.send("/aiedit/job", json.dumps(job))
            return _follow(client, job["id"])
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
        print(f"daemon stopped (exit code {daemon.returncode}); its log: {spool / 'aiedit.log'}")


def _wait_daemon(spool: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited with code {proc.returncode}; see its log in {spool.parent}")
        try:
            info = json.loads((spool / "daemon.json").read_text())
        except (OSError, ValueError):
            time.sleep(0.05)
            continue
        with OscClient("127.0.0.1", int(info["port"])) as c:
            pong = ping(c, timeout=2.0, wait=True)
        if pong:
            return pong
    raise SystemExit("the daemon did not answer within 30 s")


def _follow(client: OscClient, jid: str) -> int:
    t0 = time.monotonic()
    last_stage = ""
    while True:
        msg = client.receive(300.0)
        if msg is None:
            print("no news from the daemon for 5 minutes; giving up", file=sys.stderr)
            return 1
        address, a = msg
        if address == "/aiedit/ack":
            print(f"[{time.monotonic() - t0:5.1f}s] accepted {a[0]}")
        elif address == "/aiedit/progress":
            if a[1] != last_stage:
                print(f"[{time.monotonic() - t0:5.1f}s] {a[1]:<10} {100 * a[2]:5.1f}%")
                last_stage = a[1]
        elif address == "/aiedit/done":
            st = json.loads(a[1])
            print(f"[{time.monotonic() - t0:5.1f}s] done: {len(st['takes'])} takes "
                  f"({st['sample_rate']} Hz, {st['channels']} ch, {st['frames']} frames each)")
            for i, take in enumerate(st["takes"]):
                sc = take.get("scores") or {}
                best = "  <- best (highest text+audio score)" if st.get("best") == i else ""
                print(f"  η={take['eta']:.2f}  {take['path']}")
                print(f"          scores: text {sc.get('text')}  audio {sc.get('audio')}  sum {sc.get('sum')}{best}")
            return 0
        elif address in ("/aiedit/error", "/aiedit/cancelled"):
            print(f"job {a[0]} {'failed: ' + a[1] if address == '/aiedit/error' else 'was cancelled'}",
                  file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
