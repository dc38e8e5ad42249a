"""The README's main job (``bash scripts/dev demo`` → ``python -m bridge.commands.demo``) works end to end.

Runs the real demo in a subprocess — daemon, OSC job, toy model — with short stage settings so it stays quick, and
checks that the takes it prints exist and line up with the demo clip (rate, channels, length).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]


def test_demo_edits_a_clip_through_the_daemon_and_prints_the_takes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "bridge.commands.demo", "--out", str(tmp_path), "--steps", "10,20,8"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    takes = re.findall(r"η=(\d\.\d\d)\s+(\S+\.wav)", proc.stdout)
    assert [eta for eta, _ in takes] == ["0.25", "0.50", "0.75", "1.00"], proc.stdout
    assert proc.stdout.count("<- best") == 1 and "scores: text" in proc.stdout
    clip = sf.info(str(tmp_path / "demo_input.wav"))
    for _, path in takes:
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.frames) == (clip.samplerate, clip.channels, clip.frames)
    assert "daemon stopped (exit code 0)" in proc.stdout
