"""Runs the REAPER scripts under lua5.4 with the fake REAPER (tests/lua) and reads the result back.

Used by tests/test_reaper_scripts.py and tests/test_reaper_e2e.py. Installs nothing: lua5.4 must be on PATH
(scripts/dev setup installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "tests" / "lua" / "runner.lua"
SCRIPTS = ROOT / "reaper_scripts"

EDIT = "AI edit selected items.lua"
BATCH = "AI batch re-take.lua"
JOBS = "AI edit jobs.lua"
SETTINGS = "AI edit settings.lua"


def lua() -> str:
    """lua5.4 (REAPER 7's Lua), or the interpreter named by $AIEDIT_TEST_LUA (e.g. lua5.3, REAPER 6's)."""
    exe = shutil.which(os.environ.get("AIEDIT_TEST_LUA", "lua5.4"))
    if exe is None:
        pytest.fail("lua5.4 is not installed: the REAPER script tests need it "
                    "(`sudo apt-get install lua5.4`, or run `bash scripts/dev setup`)", pytrace=False)
    return exe


def run(tmp: Path, scenario: dict, timeout: float = 60, env: dict | None = None) -> dict:
    """Runs one scenario (a fresh Lua process = a fresh REAPER session) and returns its dump."""
    path = tmp / f"scenario-{time.monotonic_ns()}.json"
    # REAPER's resource folder (ReaImGui keeps its window settings there): one per test, kept across its sessions
    scenario = {"resource_path": str(tmp / "reaper-resource"), **scenario}
    path.write_text(json.dumps(scenario), encoding="utf-8")
    penv = {k: v for k, v in os.environ.items() if k != "AIEDIT_SPOOL"}
    penv.update(env or {})
    proc = subprocess.run([lua(), str(RUNNER), str(path)], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=penv)
    assert proc.returncode == 0, f"lua failed:\n{proc.stderr}\n{proc.stdout[-2000:]}"
    out = json.loads(proc.stdout)
    return out


def persisted(out: dict) -> dict:
    """The ExtState a REAPER restart keeps (persist=true), in scenario form."""
    return {k: v["value"] for k, v in out["extstate"].items() if v["persist"]}


def saved(out: dict, project: int = 0) -> dict:
    """What the next session starts from: persisted ExtState and the saved project's ProjExtState."""
    return {"extstate": persisted(out), "projextstate": out["projects"][project]["projextstate"]}


def registry(out: dict, project: int | None = None) -> dict:
    """Job bookkeeping records by job id (ProjExtState section aiedit.jobs of each project)."""
    projects = out["projects"] if project is None else [out["projects"][project]]
    # by the id inside the record: the key itself may come back upper-cased (scenario "ext_keys_upper")
    recs = [json.loads(v) for p in projects for k, v in p["projextstate"].items() if k.startswith("aiedit.jobs/")]
    return {r["id"]: r for r in recs}


def write_wav(path: Path, seconds: float, sr: int = 48000, channels: int = 2, value: float = 0.1) -> Path:
    frames = round(seconds * sr)
    sf.write(str(path), np.full((frames, channels), value, dtype=np.float32), sr, subtype="FLOAT")
    return path


def heartbeat(spool: Path, age: float = 0.0, model: str = "tiny", **extra) -> None:
    """daemon.json; `extra` adds newer fields (e.g. modes=[...], workers=[...])."""
    spool.mkdir(parents=True, exist_ok=True)
    now = time.time()
    (spool / "daemon.json").write_text(json.dumps({
        "version": 1, "pid": 1, "host": "127.0.0.1", "port": 9050, "spool": str(spool), "model": model,
        "started": now - 100, "heartbeat": now - age, **extra}))


def inbox_jobs(spool: Path) -> dict:
    files = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted((spool / "inbox").glob("*.json"))}
    return {k: v for k, v in files.items() if "op" not in v}


def write_status(spool: Path, job: dict, state: str, *, stage: str | None = None, progress: float = 0.0,
                 error: str | None = None, best: int | None = None, model: str = "tiny", **extra) -> dict:
    """A status.json as the daemon writes it (docs/protocol.md); for "done", real take WAVs are written."""
    jdir = spool / "jobs" / job["id"]
    (jdir / "takes").mkdir(parents=True, exist_ok=True)
    info = sf.info(job["source"]["path"])
    frames = round(job["source"]["length"] * info.samplerate)
    takes = []
    pictures = {}
    if state == "done":
        from engine.pictures import spectrogram_png

        for i, eta in enumerate(job["etas"]):
            p = jdir / "takes" / f"eta{eta:.2f}.wav"
            audio = np.full((frames, info.channels), 0.01 * (i + 1), dtype=np.float32)
            sf.write(str(p), audio, info.samplerate, subtype="FLOAT")
            png = p.with_suffix(".png")  # the pictures the daemon writes with the takes (docs/protocol.md)
            png.write_bytes(spectrogram_png(audio, info.samplerate))
            takes.append({"eta": eta, "path": str(p), "spectrogram": str(png),
                          "scores": {"text": 0.3 + 0.1 * i, "audio": 0.9 - 0.01 * i, "sum": 1.2 + 0.09 * i}})
        pictures["input_spectrogram"] = str(jdir / "takes" / "input.png")
        Path(pictures["input_spectrogram"]).write_bytes(spectrogram_png(np.zeros(frames), info.samplerate))
    status = {
        "version": 1, "id": job["id"], "label": job.get("label"), "state": state,
        "stage": stage or state, "progress": 1.0 if state == "done" else progress, "error": error,
        "priority": job.get("priority", "interactive"), "prompt": job["prompt"], "mode": job.get("mode", "lora"),
        "model": model, "seed": job.get("seed", 0), "source": job["source"], "sample_rate": info.samplerate,
        "channels": info.channels, "frames": frames, "takes": takes,
        "best": (best if best is not None else (len(takes) - 1 if takes else None)),
        "created": time.time() - 5, "updated": time.time(), **pictures, **extra,
    }
    (jdir / "status.json").write_text(json.dumps(status), encoding="utf-8")
    return status


def pick_up(spool: Path, job_id: str) -> None:
    """What the daemon does when it takes a job: the inbox file goes away."""
    (spool / "inbox" / f"{job_id}.json").unlink()


def items_by_guid(out: dict) -> dict:
    return {it["guid"]: it for tr in out["tracks"] for it in tr["items"]}
