"""``python -m bridge.commands.demo``: the whole loop a REAPER user sees, offline, in about a minute on a CPU.

Renders a clip of the toy world ("three knocks over a low hum", stereo, 44.1 kHz, like a recording on a REAPER
track), starts ``aiedit serve --model toy`` on a demo spool, sends one job over OSC exactly as the REAPER scripts
do, prints progress as it arrives, then the takes with their scores, and stops the daemon cleanly. The toy model
(``engine/weights/toy``, trained here on the procedural world) is small and knows only that world;
docs/quality.md measures its edits. ``--model tiny`` runs the same loop on random weights (plumbing only).
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
import soxr

from bridge.wire.client import OscClient, ping

ROOT = Path(__file__).resolve().parents[1]
DEMO_PROMPT = "three knocks and a bell over a low hum"  # the paper gives the whole scene, not just the change


def make_clip(path: Path, sr: int = 44_100) -> Path:
    """Three knocks over a low hum from the toy world, as a 24-bit stereo file at ``sr`` (the engine resamples)."""
    from toyworld import world

    spec = world.ClipSpec(tuple(world.Event("knock", t, t + 0.1, g) for t, g in ((0.35, 0.9), (0.95, 0.8),
                                                                                    (1.55, 1.0))), "hum", 0.2, 7)
    mono = soxr.resample(world.render(spec).wave.astype(np.float64), world.SR, sr, quality="VHQ")
    stereo = np.stack([mono, 0.8 * mono], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(stereo, -1, 1), sr, subtype="PCM_24")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bridge.commands.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/demo", help="folder for the clip and the demo spool")
    ap.add_argument("--model", default="toy", help="toy (trained here, the default) or tiny (random weights)")
    ap.add_argument("--prompt", default=DEMO_PROMPT)
    ap.add_argument("--mode", default="lora", choices=["lora", "full", "sdedit"])
    ap.add_argument("--steps", default=None,
                    help="embed,tune,sample steps (default: the model's own; 20,20,10 for tiny)")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    spool = out / f"spool-{int(time.time())}"
    clip = make_clip(out / "demo_input.wav")
    steps = args.steps or ("20,20,10" if args.model == "tiny" else None)
    print(f"demo clip: {clip} (three knocks over a low hum; 2.56 s, 44.1 kHz, stereo)")

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
               "prompt": args.prompt, "etas": [0.25, 0.5, 0.75] if args.mode == "sdedit" else [0.25, 0.5, 0.75, 1.0],
               "mode": args.mode, "seed": 0, "label": "demo", "model": args.model}
        if steps:
            embed, tune, sample = (int(s) for s in steps.split(","))
            job["steps"] = {"embed": embed, "tune": tune, "sample": sample}
        print(f"job: \"{args.prompt}\", {args.mode}, η {job['etas']}")
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
