"""End to end: REAPER scripts (fake REAPER, lua5.4) -> spool inbox -> a real `aiedit serve --model tiny` -> status.json
-> takes imported into the fake project. Tiny step counts come from the scripts' steps setting."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
from reaper_harness import EDIT, JOBS, ROOT, items_by_guid, registry, run, saved
from test_pictures import decode_png

try:
    from bridge_helpers import TINY_STEPS, Daemon, make_wav

    READY = True
except Exception:  # the daemon or its helpers are not there yet
    READY = False

pytestmark = pytest.mark.skipif(not READY, reason="bridge daemon / tests/bridge_helpers.py not available")

GUID = "{E2E00000-0000-0000-0000-000000000001}"


def scenario(spool, src, steps, **extra):
    extra.setdefault("extstate", {"aiedit/spool": str(spool), "aiedit/steps": json.dumps(TINY_STEPS)})
    info = sf.info(str(src))
    return {
        "tracks": [{"name": "T", "items": [{
            "guid": GUID, "position": 4.0, "length": 0.5, "selected": True,
            "takes": [{"name": "Knock", "startoffs": 0.25, "playrate": 1.0,
                       "source": {"file": str(src), "type": "WAVE", "samplerate": info.samplerate,
                                  "channels": info.channels, "length": info.duration}}]}]}],
        "time_selection": [4.1, 4.3], "project_path": str(spool.parent / "project"),
        "user_inputs": [["a knock on a metal door", "0.4, 0.8", "lora", "3"]],
        "steps": steps, "dt": 0.5, **extra,
    }


def test_scripts_with_the_real_daemon(tmp_path):
    spool = tmp_path / "spool"
    src = make_wav(tmp_path / "src.wav", seconds=1.0)
    with Daemon(spool) as d:
        out = run(tmp_path, scenario(spool, src, [{"run": EDIT}, {"defer_until_idle": {"timeout": 240, "sleep": 0.2}}]),
                  timeout=300)
        assert out["errors"] == [] and out["messages"] == []
        (rec,) = registry(out).values()
        assert rec["state"] == "imported", (rec, d.stderr()[-3000:])
        status = d.status(rec["id"])
    assert status["state"] == "done" and status["source"]["start"] == pytest.approx(0.25)
    item = items_by_guid(out)[GUID]
    assert len(item["takes"]) == 3
    info = sf.info(str(src))
    for take, t in zip(item["takes"][1:], status["takes"], strict=True):
        # the take file was copied from the spool into the project's media folder
        assert take["source"]["file"] == str(spool.parent / "project" / "aiedit" / rec["id"] / Path(t["path"]).name)
        assert Path(take["source"]["file"]).read_bytes() == Path(t["path"]).read_bytes()
        assert take["source"]["samplerate"] == info.samplerate and take["source"]["channels"] == info.channels
        # the take covers exactly the item (rate 1): frames of the region
        assert take["source"]["length"] == pytest.approx(0.5, abs=1 / info.samplerate)
        assert take["ext"]["aiedit_job"] == rec["id"] and take["ext"]["aiedit_model"] == status["model"]
    best = status["best"]
    assert item["active_take"] == item["takes"][1 + best]["guid"]
    assert out["undo"][0::2] == ["begin"] and out["open_undo"] == 0
    # issue 24: the daemon wrote a spectrogram of the input and of each take with the takes, named in the status
    pictures = [status["input_spectrogram"], *(t["spectrogram"] for t in status["takes"])]
    assert Path(pictures[0]).name == "input.png"
    for t in status["takes"]:
        assert Path(t["spectrogram"]).with_suffix(".wav") == Path(t["path"])
    for pic in pictures:
        data = Path(pic).read_bytes()
        assert len(data) <= 64 * 1024 and decode_png(data).shape[0] == 64
    # and the jobs window on ReaImGui loads them (the fake checks each PNG's chunks and header)
    sc = scenario(spool, src, [{"run": JOBS}, {"defer": 1}, {"imgui_click": "Knock##row"}, {"defer": 1}],
                  imgui=True, **saved(out))
    sc["tracks"] = _tracks_of(out)
    shown = run(tmp_path, sc)
    assert shown["errors"] == [] and shown["imgui"]["images_loaded"] == 3
    assert [r[2] for r in shown["imgui"]["tables"]["takes"]["rows"]] == [
        f"[image {Path(t['spectrogram']).name}]" for t in status["takes"]]


def _tracks_of(out: dict) -> list:
    """The dumped project as the next session's scenario tracks (the AI takes included)."""
    tracks = []
    for tr in out["tracks"]:
        items = []
        for it in tr["items"]:
            takes = [{"guid": t["guid"], "name": t["name"], "ext": t["ext"], "startoffs": t["values"]["D_STARTOFFS"],
                      "playrate": t["values"]["D_PLAYRATE"], "source": t["source"]} for t in it["takes"]]
            items.append({"guid": it["guid"], "position": it["values"]["D_POSITION"],
                          "length": it["values"]["D_LENGTH"], "takes": takes})
        tracks.append({"name": tr["name"], "items": items})
    return tracks


def test_cancel_through_the_real_daemon(tmp_path):
    spool = tmp_path / "spool"
    src = make_wav(tmp_path / "src.wav", seconds=1.0)
    with Daemon(spool) as d:
        # submit with default (slow) steps so the job is still running when cancelled
        sc = scenario(spool, src, [{"run": EDIT}, {"defer": 1}])
        sc["extstate"]["aiedit/steps"] = json.dumps({"embed": 200, "tune": 200, "sample": 50})
        out = run(tmp_path, sc)
        (jid,) = registry(out)
        d.wait_status(jid, states=("running",), timeout=60)
        sc2 = scenario(spool, src, [{"run": JOBS}, {"defer": 1}, {"click": f"cancel:{jid}"},
                                    {"defer_until_idle": {"timeout": 60, "sleep": 0.2}}],
                       **saved(out))
        out2 = run(tmp_path, sc2, timeout=120)
        assert registry(out2)[jid]["state"] == "cancelled", d.status(jid)
    assert len(items_by_guid(out2)[GUID]["takes"]) == 1


def test_preview_from_the_dialog_runs_zeta_through_the_real_daemon(tmp_path):
    """The dialog's fast mode ("preview" = the zero-shot zeta edit) reaches the engine and comes back as takes."""
    spool = tmp_path / "spool"
    src = make_wav(tmp_path / "src.wav", seconds=1.0)
    sc = scenario(spool, src, [{"run": EDIT}, {"defer_until_idle": {"timeout": 240, "sleep": 0.2}}],
                  user_inputs=[["a knock on a metal door", "0.5, 1", "preview", "3"]])
    with Daemon(spool) as d:
        out = run(tmp_path, sc, timeout=300)
        assert out["errors"] == [] and out["messages"] == []
        (rec,) = registry(out).values()
        assert rec["state"] == "imported", (rec, d.stderr()[-3000:])
        status = d.status(rec["id"])
    assert status["state"] == "done"
    job = json.loads((spool / "jobs" / rec["id"] / "job.json").read_text())
    assert job["mode"] == "zeta" and job["etas"] == [0.5, 1.0]
    assert [t["eta"] for t in status["takes"]] == [0.5, 1.0]
    assert len(items_by_guid(out)[GUID]["takes"]) == 3


def test_spool_project_source_and_engine_in_folders_with_spaces_and_non_ascii_names(tmp_path, monkeypatch):
    """REAPER starts the engine itself (the command line the scripts build, run as ExecProcess runs it on macOS and
    Linux: through the shell), with the home folder (hence the default spool), the project, the source and the
    engine under folders named with spaces and non-ASCII characters; the job comes back as takes."""
    from bridge.jobs.spool import default_spool

    base = tmp_path / "Åsa Øre – 音 studio"
    home = base / "Home José Müller"
    launcher = base / "Programme – 音" / "aiedit env" / "bin" / "aiedit"
    launcher.parent.mkdir(parents=True)
    # the installed console script, in effect: here the daemon with the tiny model on a free port
    launcher.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m bridge "$@" --model tiny --port 0\n',
                        encoding="utf-8")
    launcher.chmod(0o755)
    src = make_wav(base / "Quellen – Tür" / "knarrt 01 ä.wav", seconds=1.0)
    project = base / "Projekt – 声 1"
    spool = home / ".aiedit" / "spool"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("AIEDIT_SPOOL", raising=False)
    assert default_spool() == spool  # the daemon's default, for the same user
    ext = {"aiedit/engine_cmd": str(launcher), "aiedit/steps": json.dumps(TINY_STEPS)}  # no spool setting
    lua_env = {"HOME": str(home)}
    out = run(tmp_path, scenario(spool, src, [{"run": EDIT}], extstate=ext, mb_answers=[6],
                                 project_path=str(project)), env=lua_env)
    assert out["errors"] == [] and len(out["exec"]) == 1, out["messages"]
    cmd = out["exec"][0]["cmd"]
    assert cmd == f'"{launcher}" serve --spool "{spool}"'
    assert len(list((spool / "inbox").glob("*.json"))) == 1  # queued before the engine runs
    log = open(tmp_path / "engine.log", "ab")  # closed in the finally below
    engine = subprocess.Popen(["/bin/sh", "-c", cmd], cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=log, env={**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT),
                                               "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 60
        while not (spool / "daemon.json").is_file() and engine.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (spool / "daemon.json").is_file(), (tmp_path / "engine.log").read_text(errors="replace")[-2000:]
        steps = [{"run": JOBS}, {"defer_until_idle": {"timeout": 240, "sleep": 0.2}}]
        out2 = run(tmp_path, scenario(spool, src, steps, project_path=str(project), **saved(out)),
                   timeout=300, env=lua_env)
        (rec,) = registry(out2).values()
        assert rec["state"] == "imported", (rec, (tmp_path / "engine.log").read_text(errors="replace")[-3000:])
    finally:
        os.killpg(engine.pid, signal.SIGTERM)
        try:
            engine.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(engine.pid, signal.SIGKILL)
            engine.wait(timeout=30)
        log.close()
    status = json.loads((spool / "jobs" / rec["id"] / "status.json").read_text(encoding="utf-8"))
    assert status["state"] == "done" and status["source"]["path"] == str(src)
    takes = items_by_guid(out2)[GUID]["takes"][1:]
    assert len(takes) == 2
    for take in takes:
        path = Path(take["source"]["file"])
        assert path.parent == project / "aiedit" / rec["id"] and path.is_file()
    # issue 24's pictures under the same folders: written beside the takes in the spool, and loaded by the jobs
    # window on ReaImGui (the fake opens each PNG and checks its chunks and header)
    pictures = [status["input_spectrogram"], *(t["spectrogram"] for t in status["takes"])]
    for pic in pictures:
        assert Path(pic).is_relative_to(spool) and decode_png(Path(pic).read_bytes()).shape[0] == 64
    sc = scenario(spool, src, [{"run": JOBS}, {"defer": 1}, {"imgui_click": "Knock##row"}, {"defer": 1}],
                  imgui=True, project_path=str(project), **saved(out2))
    sc["tracks"] = _tracks_of(out2)
    shown = run(tmp_path, sc, env=lua_env)
    assert shown["errors"] == [] and shown["imgui"]["images_loaded"] == 3
