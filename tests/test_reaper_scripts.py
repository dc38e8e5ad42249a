"""The REAPER scripts (reaper_scripts/*.lua) against a fake REAPER, headless, under lua5.4.

Each `run` is a fresh Lua process, i.e. a fresh REAPER session: bookkeeping that must survive a restart is
carried over only through persisted ExtState, as in REAPER.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from reaper_harness import (
    BATCH,
    EDIT,
    JOBS,
    ROOT,
    SCRIPTS,
    SETTINGS,
    heartbeat,
    inbox_jobs,
    items_by_guid,
    lua,
    persisted,
    pick_up,
    registry,
    run,
    saved,
    write_status,
    write_wav,
)

ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
G1, G2, G3 = "{11111111-0000-0000-0000-000000000001}", "{22222222-0000-0000-0000-000000000002}", \
    "{33333333-0000-0000-0000-000000000003}"


def wave_source(path: Path, length: float = 10.0, sr: int = 48000, ch: int = 2) -> dict:
    return {"file": str(path), "type": "WAVE", "samplerate": sr, "channels": ch, "length": length}


@pytest.fixture
def env(tmp_path):
    """A spool with a live daemon heartbeat, two source WAVs and a three-item project."""
    spool = tmp_path / "spool"
    heartbeat(spool)
    a = write_wav(tmp_path / "drums.wav", 10.0)
    b = write_wav(tmp_path / "fx.wav", 6.0, sr=44100, channels=1)
    tracks = [{"name": "Drums", "selected": True, "items": [
        # plays source [1.0, 1.0 + 2.0*1.5] at rate 1.5; the time selection [3.0, 3.5] covers part of it
        {"guid": G1, "position": 2.0, "length": 2.0, "selected": True,
         "takes": [{"name": "Kick 03", "startoffs": 1.0, "playrate": 1.5, "pitch": 2.0,
                    "source": wave_source(a)}]},
        {"guid": G2, "position": 6.0, "length": 1.5, "selected": True,
         "takes": [{"name": "Snare", "startoffs": 0.25, "source": wave_source(a)}]},
    ]}, {"name": "FX", "items": [
        {"guid": G3, "position": 10.0, "length": 2.0, "selected": True, "notes": "a creaking door",
         "takes": [{"name": "Door", "startoffs": 0.5, "source": wave_source(b, 6.0, 44100, 1)}]},
    ]}]
    return {"tmp": tmp_path, "spool": spool, "a": a, "b": b,
            "project": tmp_path / "project",
            "scenario": {"tracks": tracks, "time_selection": [3.0, 3.5], "project_path": str(tmp_path / "project"),
                         "extstate": {"aiedit/spool": str(spool)}}}


def edit(env, answers=None, steps=None, **extra) -> dict:
    sc = dict(env["scenario"], **extra)
    sc["user_inputs"] = answers if answers is not None else [["knocking on a door, wooden", "0.3, 0.5, 0.7",
                                                              "LoRA", "42"]]
    sc["steps"] = steps or [{"run": EDIT}]
    return run(env["tmp"], sc)


def jobs_session(env, state: dict, steps: list, before: tuple = (), **extra) -> dict:
    """A later REAPER session (after a restart, the project reopened) that opens the jobs window."""
    sc = dict(env["scenario"], **state, steps=[*before, {"run": JOBS}, *steps], **extra)
    return run(env["tmp"], sc)


def by_label(jobs: dict) -> dict:
    return {j["label"]: j for j in jobs.values()}


# ---------------------------------------------------------------------------------------------------------------
# submitting


def test_edit_writes_protocol_jobs(env):
    out = edit(env)
    assert out["errors"] == []
    jobs = by_label(inbox_jobs(env["spool"]))
    assert set(jobs) == {"Kick 03", "Snare", "Door"}
    assert not list((env["spool"] / "inbox").glob(".tmp-*")), "temporary files must be renamed"
    for j in jobs.values():
        assert ID_RE.match(j["id"])
        assert j["version"] == 1 and j["prompt"] == "knocking on a door, wooden"
        assert j["etas"] == [0.3, 0.5, 0.7] and j["mode"] == "lora" and j["seed"] == 42
        assert j["priority"] == "interactive"
        assert "model" not in j  # one model per daemon: the client does not guess it
    kick = jobs["Kick 03"]
    # source region in source seconds: [D_STARTOFFS, D_STARTOFFS + D_LENGTH * D_PLAYRATE]
    assert kick["source"] == {"path": str(env["a"]), "start": 1.0, "length": 3.0}
    # overlap [3.0, 3.5] on the timeline -> (t - D_POSITION) * D_PLAYRATE relative to the region start
    assert kick["inpaint"] == {"start": pytest.approx(1.5), "end": pytest.approx(2.25)}
    assert jobs["Snare"]["source"] == {"path": str(env["a"]), "start": 0.25, "length": 1.5}
    assert jobs["Snare"]["inpaint"] is None
    assert jobs["Door"]["source"] == {"path": str(env["b"]), "start": 0.5, "length": 2.0}
    # bookkeeping survives the session; the jobs window opened and polls in a defer loop
    reg = registry(out)
    assert {r["item"] for r in reg.values()} == {G1, G2, G3}
    assert out["gfx_open"] and out["pending_defer"] == 2  # the window's loop + the edit's no-op defer
    assert out["messages"] == [] and out["undo"] == []  # no automatic undo point for a no-change action


def test_dialog_remembers_last_values(env):
    out = edit(env)
    ext = persisted(out)
    assert ext["aiedit/last_prompt"] == "knocking on a door, wooden"
    out2 = edit(env, answers=[False], extstate=ext)  # the user cancels the second time
    assert out2["inputs_asked"][0]["defaults"] == "knocking on a door, wooden\n0.3, 0.5, 0.7\nLoRA\n42"
    assert "separator=\n" in out2["inputs_asked"][0]["captions"]


def test_bad_dialog_values_ask_again(env):
    out = edit(env, answers=[["x", "0.3, 2.0", "lora", "1"], ["x", "0.3", "preview", ""]])
    # issue 18: the wrong field is named in its own caption when the dialog comes back (no message box)
    assert out["messages"] == []
    assert out["inputs_asked"][1]["labels"][1] == "! η values: η must be in [0; 1.5]: 2.0"
    assert out["inputs_asked"][1]["labels"][0] == "Prompt" and out["inputs_asked"][1]["values"][1] == "0.3, 2.0"
    jobs = list(inbox_jobs(env["spool"]).values())
    assert len(jobs) == 3 and all(j["mode"] == "zeta" and j["etas"] == [0.3] for j in jobs)
    assert all(isinstance(j["seed"], int) and j["seed"] >= 0 for j in jobs)


def test_steps_and_token_settings_are_sent(env):
    ext = {"aiedit/spool": str(env["spool"]), "aiedit/steps": '{"embed":3,"tune":3,"sample":4}',
           "aiedit/token": "s3cret"}
    env["scenario"]["tracks"][0]["items"][1]["length"] = 12.0  # rendered first: its job waits in the project
    out = edit(env, extstate=ext)
    assert "s3cret" not in json.dumps(out["projects"][0]["projextstate"])  # the secret is not saved in the .rpp
    assert len(inbox_jobs(env["spool"])) == 2
    out = edit(env, extstate=ext, steps=[{"run": EDIT}, {"defer": 8}])
    jobs = inbox_jobs(env["spool"]).values()
    assert len(jobs) == 5
    for j in jobs:
        assert j["steps"] == {"embed": 3, "tune": 3, "sample": 4} and j["token"] == "s3cret"


def test_engine_not_running_shows_command(env):
    (env["spool"] / "daemon.json").unlink()
    out = edit(env, answers=[], mb_answers=[2])  # Cancel
    msg = out["messages"][0]["msg"]
    assert f'aiedit serve --spool "{env["spool"]}"' in msg
    assert out["exec"] == [] and inbox_jobs(env["spool"]) == {}


def test_stale_heartbeat_start_engine(env):
    heartbeat(env["spool"], age=30)
    ext = {"aiedit/spool": str(env["spool"]), "aiedit/engine_cmd": "/opt/aiedit/bin/aiedit serve"}
    out = edit(env, mb_answers=[6], extstate=ext)  # Yes: start it
    cmd = f'/opt/aiedit/bin/aiedit serve --spool "{env["spool"]}"'
    assert cmd in out["messages"][0]["msg"]
    assert out["exec"] == [{"cmd": cmd, "timeout": -2}]  # no wait, minimised: never block REAPER
    assert len(inbox_jobs(env["spool"])) == 3
    assert any("engine not running" in t for t in out["gfx_text"]) or out["gfx_text"] == []


def test_no_selection(env):
    for tr in env["scenario"]["tracks"]:
        for it in tr["items"]:
            it["selected"] = False
    out = edit(env, answers=[])
    assert "Select one or more" in out["messages"][0]["msg"]


def test_refusals_are_explained_and_others_still_go(env):
    tracks = env["scenario"]["tracks"]
    tracks[0]["items"][0]["takes"][0]["fx"] = [{"name": "ReaEQ"}]
    tracks[0]["items"][1]["takes"] = []
    tracks[1]["items"][0]["takes"][0]["source"]["file"] = str(env["tmp"] / "missing.wav")
    tracks[1]["items"].append({"guid": "{44}", "position": 20.0, "length": 1.0, "selected": True,
                               "takes": [{"name": "Bypassed FX", "fx": [{"name": "ReaComp", "enabled": False}],
                                          "source": wave_source(env["a"])}]})
    out = edit(env)
    msg = out["messages"][0]["msg"]
    assert "1 job queued" in msg
    assert "Kick 03: take has active take FX" in msg
    assert "(empty item): empty item" in msg
    assert "Door: source file not found" in msg
    assert list(by_label(inbox_jobs(env["spool"]))) == ["Bypassed FX"]


# ---------------------------------------------------------------------------------------------------------------
# rendering sources REAPER cannot hand over as a file


def test_section_source_is_rendered_to_float_wav(env):
    tracks = env["scenario"]["tracks"]
    tracks[1]["items"][0]["takes"][0]["source"]["type"] = "SECTION"  # reversed / section take
    tracks[1]["items"][0]["takes"][0]["playrate"] = 2.0
    sc_ts = [10.5, 11.0]
    out = edit(env, time_selection=sc_ts)
    assert out["errors"] == [] and out["accessors_open"] == 0
    door = by_label(inbox_jobs(env["spool"]))["Door"]
    path = Path(door["source"]["path"])
    assert path.parent == env["spool"] / "renders"
    # the rendered file is the item as heard: timeline seconds, playrate already applied
    assert door["source"]["start"] == 0.0 and door["source"]["length"] == 2.0
    assert door["inpaint"] == {"start": 0.5, "end": 1.0}
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    assert sf.info(str(path)).subtype == "FLOAT" and sr == 44100 and data.shape == (88200, 1)
    t = np.arange(88200) / 44100
    # what the take plays at item time t: source time D_STARTOFFS + t * D_PLAYRATE
    np.testing.assert_allclose(data[:, 0], 0.5 * np.sin(2 * np.pi * 440 * (0.5 + 2.0 * t)), atol=2e-4)
    raw = path.read_bytes()
    assert raw[:4] == b"RIFF" and struct.unpack("<I", raw[4:8])[0] == len(raw) - 8


def test_item_beyond_source_end_is_rendered(env):
    env["scenario"]["tracks"][0]["items"][1]["length"] = 12.0  # loops past the 10 s source
    # defect 4: rendered in slices by the jobs window, not in one go inside the edit action
    out = edit(env)
    assert "Snare" not in by_label(inbox_jobs(env["spool"]))
    assert any("rendering" in t for t in out["gfx_text"])
    assert not list((env["spool"] / "renders").glob("*.wav"))  # only a .part while it renders
    edit(env, steps=[{"run": EDIT}, {"defer": 8}])
    snare = by_label(inbox_jobs(env["spool"]))["Snare"]
    assert "renders" in snare["source"]["path"] and snare["source"]["length"] == 12.0


# ---------------------------------------------------------------------------------------------------------------
# importing results


def submit_and_finish(env, activate_best="yes"):
    out = edit(env)
    st = saved(out)
    st["extstate"]["aiedit/activate_best"] = activate_best
    jobs = by_label(inbox_jobs(env["spool"]))
    for j in jobs.values():
        pick_up(env["spool"], j["id"])
        write_status(env["spool"], j, "done", best=1)
    return st, jobs


def test_done_jobs_are_imported_as_takes(env):
    ext, jobs = submit_and_finish(env)
    out = jobs_session(env, ext, [{"defer": 2}])
    assert out["errors"] == []
    items = items_by_guid(out)
    kick = items[G1]
    assert len(kick["takes"]) == 4
    orig, new = kick["takes"][0], kick["takes"][1:]
    # the original take is untouched (the fake also raises on any write to it)
    assert orig["name"] == "Kick 03" and orig["values"]["D_STARTOFFS"] == 1.0 and orig["ext"] == {}
    assert [t["name"] for t in new] == [f"AI η={e:.2f} · knocking on a door, wooden" for e in (0.3, 0.5, 0.7)]
    job = jobs["Kick 03"]
    for i, t in enumerate(new):
        # copied into the project's media folder (GetProjectPathEx), so the project owns its takes
        spool_file = env["spool"] / "jobs" / job["id"] / "takes" / f"eta{job['etas'][i]:.2f}.wav"
        assert t["source"]["file"] == str(env["project"] / "aiedit" / job["id"] / spool_file.name)
        assert Path(t["source"]["file"]).read_bytes() == spool_file.read_bytes()
        # source-time audio at the original's rate: offset 0, same playrate and pitch -> lines up and sounds alike
        assert t["values"]["D_STARTOFFS"] == 0.0 and t["values"]["D_PLAYRATE"] == 1.5
        assert t["values"]["D_PITCH"] == 2.0
        assert t["source"]["length"] / t["values"]["D_PLAYRATE"] == pytest.approx(kick["values"]["D_LENGTH"])
        ext_data = t["ext"]
        assert ext_data["aiedit_prompt"] == "knocking on a door, wooden"
        assert ext_data["aiedit_eta"] == f"{job['etas'][i]:.4g}" and ext_data["aiedit_seed"] == "42"
        assert ext_data["aiedit_mode"] == "lora" and ext_data["aiedit_model"] == "tiny"
        assert ext_data["aiedit_job"] == job["id"] and ext_data["aiedit_best"] == ("1" if i == 1 else "0")
        assert json.loads(ext_data["aiedit_scores"])["sum"] == pytest.approx(1.2 + 0.09 * i)
        assert json.loads(ext_data["aiedit_inpaint"]) == {"start": 1.5, "end": 2.25}
    assert kick["active_take"] == new[1]["guid"]  # best = 1
    # exactly one undo block per import, all closed
    assert out["open_undo"] == 0 and len(out["undo"]) == 6 and out["undo"][0::2] == ["begin"] * 3
    assert all(u.startswith("end:AI edit: 3 takes for ") for u in out["undo"][1::2])
    assert items[G2]["takes"][3]["values"]["D_PLAYRATE"] == 1.0
    assert all(r["state"] == "imported" for r in registry(out).values())
    assert out["jobs_active"] == 0


def test_best_take_not_activated_when_off(env):
    ext, _ = submit_and_finish(env, activate_best="no")
    out = jobs_session(env, ext, [{"defer": 2}])
    for it in items_by_guid(out).values():
        assert it["active_take"] == it["takes"][0]["guid"]


def test_import_after_item_moved_and_trimmed(env):
    ext, _ = submit_and_finish(env)
    sc_tracks = env["scenario"]["tracks"]
    snare = sc_tracks[0]["items"][1]
    snare["position"] = 30.0                       # moved
    snare["length"] = 1.0
    snare["takes"][0]["startoffs"] = 0.5          # left edge trimmed by 0.25 s after submission
    out = jobs_session(env, ext, [{"defer": 2}])
    new = items_by_guid(out)[G2]["takes"][1]
    assert new["values"]["D_STARTOFFS"] == pytest.approx(0.25)  # still lined up with the original


def test_rendered_item_imports_at_rate_one_and_render_is_removed(env):
    env["scenario"]["tracks"][1]["items"][0]["takes"][0]["source"]["type"] = "SECTION"
    env["scenario"]["tracks"][1]["items"][0]["takes"][0]["playrate"] = 2.0
    ext, jobs = submit_and_finish(env)
    render = Path(jobs["Door"]["source"]["path"])
    assert render.exists()
    out = jobs_session(env, ext, [{"defer": 2}])
    door = items_by_guid(out)[G3]
    assert door["takes"][1]["values"]["D_PLAYRATE"] == 1.0 and door["takes"][1]["values"]["D_STARTOFFS"] == 0.0
    assert not render.exists()


def test_failed_cancelled_and_deleted(env):
    out = edit(env)
    ext = saved(out)
    jobs = by_label(inbox_jobs(env["spool"]))
    for j in jobs.values():
        pick_up(env["spool"], j["id"])
    write_status(env["spool"], jobs["Kick 03"], "failed", error="source too short for the model")
    write_status(env["spool"], jobs["Snare"], "running", stage="finetune", progress=0.4)
    write_status(env["spool"], jobs["Door"], "done")
    snare_id = jobs["Snare"]["id"]
    out = jobs_session(env, ext, [{"defer": 1}, {"click": f"cancel:{snare_id}"}, {"defer": 1}],
                       before=[{"delete_item": G3}])
    assert out["errors"] == []
    cancel = json.loads((env["spool"] / "inbox" / f"cancel-{snare_id}.json").read_text())
    assert cancel == {"version": 1, "op": "cancel", "id": snare_id}
    reg = registry(out)
    assert reg[jobs["Kick 03"]["id"]]["state"] == "failed"
    assert reg[jobs["Kick 03"]["id"]]["message"] == "source too short for the model"
    assert reg[snare_id]["state"] == "cancelling"
    door = reg[jobs["Door"]["id"]]
    takes_dir = env["spool"] / "jobs" / jobs["Door"]["id"] / "takes"
    assert door["state"] == "missing" and str(takes_dir) in door["message"]
    assert len(list(takes_dir.glob("*.wav"))) == 3  # files kept
    assert out["console"] == []  # messages go to the window, no console pop-up per line
    shown = "\n".join(out["gfx_text"])
    assert "Door: the item is gone" in shown and "Kick 03: failed: source too short" in shown
    assert any(t.startswith("failed: source too short") for t in out["gfx_text"])
    assert out["undo"] == []
    assert "Cancel" not in out["gfx_text"]  # no Cancel button on cancelling/finished rows
    # the daemon confirms the cancel
    write_status(env["spool"], jobs["Snare"], "cancelled", error="cancelled by the user")
    out2 = jobs_session(env, saved(out), [{"defer": 1}])
    assert registry(out2)[snare_id]["state"] == "cancelled"
    assert len(items_by_guid(out2)[G2]["takes"]) == 1


def test_cancel_racing_completion_does_not_import(env):
    out = edit(env)
    jobs = by_label(inbox_jobs(env["spool"]))
    for j in jobs.values():
        pick_up(env["spool"], j["id"])
        write_status(env["spool"], j, "running", stage="sampling", progress=0.7)
    out = jobs_session(env, saved(out), [{"defer": 1}, {"click": "cancel_all"}], mb_answers=[7])  # No
    assert "Cancel all 3 running AI edit jobs?" in out["messages"][0]["msg"]
    assert not list((env["spool"] / "inbox").glob("cancel-*.json"))  # only after the question
    out = jobs_session(env, saved(out), [{"defer": 1}, {"click": "cancel_all"}], mb_answers=[6])  # Yes
    assert len(list((env["spool"] / "inbox").glob("cancel-*.json"))) == 3
    for j in jobs.values():
        write_status(env["spool"], j, "done")  # finished before the daemon saw the cancel
    out = jobs_session(env, saved(out), [{"defer": 1}])
    assert all(r["state"] == "cancelled" and "not imported" in r["message"] for r in registry(out).values())
    assert all(len(it["takes"]) == 1 for it in items_by_guid(out).values())


def test_cancel_before_pickup_withdraws_the_job(env):
    out = edit(env, steps=[{"run": EDIT}, {"defer": 1}])
    kick = by_label(inbox_jobs(env["spool"]))["Kick 03"]
    sc = dict(env["scenario"], **saved(out), steps=[{"run": JOBS}, {"defer": 1},
                                                              {"click": f"cancel:{kick['id']}"}])
    out = run(env["tmp"], sc)
    assert kick["id"] not in inbox_jobs(env["spool"])
    assert not list((env["spool"] / "inbox").glob("cancel-*"))
    assert registry(out)[kick["id"]]["state"] == "cancelled"


def test_window_escape_closes_and_jobs_survive(env):
    out = edit(env, steps=[{"run": EDIT}, {"defer": 1}, {"key": 27}, {"defer": 1}])
    assert not out["gfx_open"] and out["pending_defer"] == 0
    assert "aiedit/window_heartbeat" not in out["extstate"]
    assert len(registry(out)) == 3  # still tracked: a later window imports them


def test_jobs_window_is_its_own_toggle_action(env):
    # defect 2: relaunching the edit action while the window is open must not hit the window's loop
    out = edit(env, steps=[{"run": EDIT}, {"defer": 1}, {"run": EDIT}, {"defer": 1}],
               answers=[["a", "0.5", "lora", "1"], ["b", "0.5", "lora", "2"]])
    assert out["errors"] == [] and out["task_control"] == []
    assert out["gfx_open"] and out["pending_defer"] == 1
    jobs_path = str(SCRIPTS / JOBS)
    assert [str(Path(p).resolve()) for p in out["actions"].values()] == [jobs_path]
    assert [str(Path(p).resolve()) for p in out["toggles"]] == [jobs_path] and set(out["toggles"].values()) == {1}
    assert len(registry(out)) == 6  # the open window picked up the second batch
    # running "AI edit jobs" again closes the window (a toggle), without the task-control dialog
    out = edit(env, steps=[{"run": EDIT}, {"defer": 1}, {"run": JOBS}, {"defer": 1}])
    assert out["task_control"] == [] and not out["gfx_open"] and out["pending_defer"] == 0
    assert out["toggles"] == {}


def test_finished_jobs_are_forgotten_next_session(env):
    ext, _ = submit_and_finish(env)
    out = jobs_session(env, ext, [{"defer": 2}])
    out2 = jobs_session(env, saved(out), [{"defer": 1}])
    assert registry(out2) == {}
    assert len(items_by_guid(out2)[G1]["takes"]) == 1  # (fresh fake project: nothing imported twice)


# ---------------------------------------------------------------------------------------------------------------
# batch


def test_batch_project_with_notes_and_a_midi_item(env):
    env["scenario"]["tracks"][1]["items"].append(
        {"guid": "{MIDI}", "position": 14.0, "length": 2.0,
         "takes": [{"name": "Keys", "source": {"type": "MIDI", "samplerate": 0, "channels": 0}}]})
    sc = dict(env["scenario"], user_inputs=[["metal clang", "0.5", "full", "7", "project", "yes"]],
              steps=[{"run": BATCH}])
    out = run(env["tmp"], sc)
    msg = out["messages"][0]["msg"]
    assert msg.startswith("3 jobs queued.") and "Keys: MIDI take" in msg
    jobs = by_label(inbox_jobs(env["spool"]))
    assert set(jobs) == {"Kick 03", "Snare", "Door"}
    assert all(j["priority"] == "batch" and j["mode"] == "full" and j["seed"] == 7 for j in jobs.values())
    assert jobs["Door"]["prompt"] == "a creaking door" and jobs["Snare"]["prompt"] == "metal clang"
    assert all(j["inpaint"] is None for j in jobs.values())  # batch = whole items


def test_batch_selected_tracks_without_notes(env):
    sc = dict(env["scenario"], user_inputs=[["metal clang", "0.5", "lora", "1", "selected tracks", "no"]],
              steps=[{"run": BATCH}])
    run(env["tmp"], sc)
    jobs = by_label(inbox_jobs(env["spool"]))
    assert set(jobs) == {"Kick 03", "Snare"}


def test_batch_item_without_any_prompt_fails_alone(env):
    sc = dict(env["scenario"], user_inputs=[["", "0.5", "lora", "1", "project", "yes"]], steps=[{"run": BATCH}])
    out = run(env["tmp"], sc)
    msg = out["messages"][0]["msg"]
    assert msg.startswith("1 job queued.") and "Kick 03: no prompt" in msg and "Snare: no prompt" in msg


# ---------------------------------------------------------------------------------------------------------------
# settings, library, packaging


def test_settings_dialog(env):
    sc = dict(env["scenario"], user_inputs=[[str(env["spool"]), "aiedit serve", "no", "{bad", ""],
                                            [str(env["spool"]), "aiedit serve", "no", '{"sample":4}', ""]],
              steps=[{"run": SETTINGS}])
    out = run(env["tmp"], sc)
    assert out["inputs_asked"][1]["labels"][3].startswith("! Steps override: empty or JSON")
    ext = persisted(out)
    assert ext["aiedit/activate_best"] == "no" and ext["aiedit/steps"] == '{"sample":4}'


def test_lua_json_and_wav_writer(tmp_path):
    wav = tmp_path / "w.wav"
    code = f"""
reaper = {{}}
package.path = {json.dumps(str(SCRIPTS) + "/?.lua;" + str(SCRIPTS) + "/?/init.lua;")} .. package.path
local lib = require("aiedit")
local s = '{{"a":"η \\\\u00e9\\\\ud83d\\\\ude00 \\\\"q\\\\" \\\\n","b":[1,2.5,-3e2,null,true],"c":{{}},"d":[]}}'
local v = assert(lib.json_decode(s))
assert(v.a == "η é😀 \\"q\\" \\n", v.a)
assert(v.b[1] == 1 and math.type(v.b[1]) == "integer" and v.b[2] == 2.5 and v.b[3] == -300)
assert(v.b[4] == lib.null and v.b[5] == true)
print(lib.json_encode(v))
print(lib.json_encode({{x = 0.1, y = 1/3, z = "tab\\tctl\\1"}}))
assert(select(2, lib.json_decode('{{"a":1,}}')))
assert(select(2, lib.json_decode('[1] x')))
assert(select(2, lib.json_decode('"\\\\ud800"')))
lib.write_wav_float({json.dumps(str(wav))}, 8000, 2, 5, function(f0, n)
  local t = {{}} for i = 1, n * 2 do t[i] = (f0 * 2 + i) / 100 end return t end)
"""
    proc = subprocess.run([lua(), "-e", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert json.loads(first) == {"a": "η é😀 \"q\" \n", "b": [1, 2.5, -300.0, None, True], "c": {}, "d": []}
    assert json.loads(second) == {"x": 0.1, "y": 1 / 3, "z": "tab\tctl\u0001"}
    data, sr = sf.read(str(wav), dtype="float32")
    assert sr == 8000 and data.shape == (5, 2)
    np.testing.assert_allclose(data.ravel(), np.arange(1, 11) / 100, rtol=1e-6)


def test_reapack_headers_and_index():
    names = ["AI edit selected items.lua", "AI batch re-take.lua", "AI edit jobs.lua", "AI edit settings.lua"]
    for n in names:
        head = (SCRIPTS / n).read_text(encoding="utf-8")[:2500]
        for tag in ("@description", "@version", "@author", "@about"):
            assert tag in head, (n, tag)
    main = (SCRIPTS / names[0]).read_text(encoding="utf-8")
    assert "[nomain] aiedit/*.lua" in main
    for n in names:
        assert f"[main] {n}" in main
    root = ET.parse(SCRIPTS / "index.xml").getroot()
    assert root.tag == "index" and root.get("version") == "1" and root.get("name")
    # issue 24: a category that reads well in ReaPack's browser (not the folder's name)
    assert [c.get("name") for c in root.findall("./category")] == ["Items Editing"]
    pkg = root.find("./category/reapack")
    assert pkg is not None and pkg.get("type") == "script" and pkg.get("name") == names[0]
    version = pkg.find("version")
    assert re.fullmatch(r"\d+\.\d+\.\d+", version.get("name"))
    files = {s.get("file") or pkg.get("name"): s.get("main") for s in version.findall("source")}
    modules = {f"aiedit/{p.name}" for p in (SCRIPTS / "aiedit").glob("*.lua")}
    assert set(files) == {*names, *modules}
    assert all(files[m] is None for m in modules) and all(files[n] == "main" for n in names)
    commit = root.get("commit")
    assert re.fullmatch(r"[0-9a-f]{40}", commit)
    for s in version.findall("source"):
        # pinned to a commit, never the moving main branch
        assert s.text.startswith("https://") and " " not in s.text and f"/{commit}/" in s.text
    version_re = re.compile(r"@version\s+(\S+)")
    headers = {version_re.search((SCRIPTS / n).read_text(encoding="utf-8")).group(1) for n in names}
    assert len(headers) == 1  # one package, one version
    core = (SCRIPTS / "aiedit" / "core.lua").read_text(encoding="utf-8")
    assert f'VERSION = "{headers.pop()}"' in core


def test_make_index_takes_the_repository_url_and_refuses_to_guess(tmp_path):
    # issue 24: the index's URL comes from --url, $AIEDIT_REPO_URL or the origin remote; none of them is an error
    script = ROOT / "tests" / "lua" / "make_index.py"
    shutil.copytree(SCRIPTS, tmp_path / "reaper_scripts")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    env = {k: v for k, v in __import__("os").environ.items() if k != "AIEDIT_REPO_URL"}
    commit = "0" * 40
    proc = subprocess.run(["python3", str(script), commit], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "no repository URL" in proc.stderr and "--url" in proc.stderr
    subprocess.run(["git", "remote", "add", "origin", "git@github.com:someone/aiedit-fork.git"], cwd=tmp_path,
                   check=True)
    proc = subprocess.run(["python3", str(script), commit], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    root = ET.parse(tmp_path / "reaper_scripts" / "index.xml").getroot()
    srcs = [s.text for s in root.iter("source")]
    assert srcs and all(x.startswith(f"https://raw.githubusercontent.com/someone/aiedit-fork/{commit}/") for x in srcs)
    assert root.find(".//link").text == "https://github.com/someone/aiedit-fork"
    proc = subprocess.run(["python3", str(script), commit, "--url", "https://gitlab.com/me/ai"], cwd=tmp_path,
                          capture_output=True, text=True, env=env)
    root = ET.parse(tmp_path / "reaper_scripts" / "index.xml").getroot()
    assert next(root.iter("source")).text.startswith(f"https://gitlab.com/me/ai/-/raw/{commit}/reaper_scripts/")


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, cwd=ROOT)


def test_index_version_changes_with_every_provided_file():
    # issue 18: index.xml pinned a commit whose takes.lua differed from HEAD under the same version. ReaPack
    # installs by version: a provided file that differs from the pinned commit's needs a new @version.
    if shutil.which("git") is None or _git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("not a git checkout")
    root = ET.parse(SCRIPTS / "index.xml").getroot()
    commit = root.get("commit")
    if _git("cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        pytest.skip(f"pinned commit {commit} is not in this clone (shallow?)")
    version = root.find("./category/reapack/version")
    pinned = version.get("name")
    version_re = re.compile(rb"@version\s+(\S+)")
    main = "reaper_scripts/AI edit selected items.lua"
    at_commit = _git("show", f"{commit}:{main}")
    assert at_commit.returncode == 0
    assert version_re.search(at_commit.stdout).group(1).decode() == pinned  # the index serves what it names
    changed = []
    for src in version.findall("source"):
        rel = "reaper_scripts/" + (src.get("file") or root.find("./category/reapack").get("name"))
        then = _git("show", f"{commit}:{rel}")
        assert then.returncode == 0, f"{rel} is not in the pinned commit {commit}"
        if then.stdout != (ROOT / rel).read_bytes():
            changed.append(rel)
    now = version_re.search((ROOT / main).read_bytes()).group(1).decode()
    if changed:
        assert now != pinned, f"{changed} changed since {commit[:10]} but @version is still {pinned}: bump it"
    else:
        assert now == pinned


# ---------------------------------------------------------------------------------------------------------------
# defects found against the REAPER API (issue 11), each under the stricter fake


def test_dialog_labels_and_remembered_values_land_in_their_fields(env):
    # defect 1: captions are split on commas whatever separator= says; values use the separator
    prompt = 'a "wooden" door (creaky), slammed'
    ext = {"aiedit/spool": str(env["spool"]), "aiedit/last_prompt": prompt, "aiedit/last_etas": "0.3, 0.5",
           "aiedit/last_mode": "sdedit", "aiedit/last_seed": "9"}
    out = edit(env, answers=[False], extstate=ext)
    asked = out["inputs_asked"][0]
    assert out["errors"] == []
    assert asked["labels"] == ["Prompt", "η values (e.g. 0.3 0.5 0.7)",
                               "Mode (lora / full / flowedit / zeta / sdedit)", "Seed (empty = random)"]
    # quotes are shown typographic (GetUserInputs reads ASCII quotes in defaults as quoting)
    assert asked["values"] == ["a ”wooden” door (creaky), slammed", "0.3, 0.5", "sdedit", "9"]
    sc = dict(env["scenario"], user_inputs=[False], steps=[{"run": BATCH}])
    assert run(env["tmp"], sc)["errors"] == []
    out = edit(env, answers=[asked["values"]], extstate=ext)  # OK as shown: the remembered prompt is sent
    assert {j["prompt"] for j in inbox_jobs(env["spool"]).values()} == {prompt}


def test_modes_preview_is_zeta_and_sdedit_is_sent_as_is(env):
    out = edit(env, answers=[["x", "0.4", "sdedit", "1"]])
    assert {j["mode"] for j in inbox_jobs(env["spool"]).values()} == {"sdedit"} and out["errors"] == []
    for p in (env["spool"] / "inbox").glob("*.json"):
        p.unlink()
    edit(env, answers=[["x", "1.2", "zeta", "1"], ["x", "0.8", "zeta", "1"]])
    jobs = list(inbox_jobs(env["spool"]).values())
    assert {j["mode"] for j in jobs} == {"zeta"} and all(j["etas"] == [0.8] for j in jobs)


def test_import_goes_to_the_items_project_tab(env):
    # defect 5: the item lives in project 2 while project 1 is the active tab
    other = {"tracks": env["scenario"]["tracks"], "project_path": str(env["project"])}
    sc = dict(env["scenario"], projects=[{"tracks": [], "project_path": str(env["tmp"] / "p1")}, other],
              active_project=2)
    sc["user_inputs"] = [["knock", "0.5", "lora", "1"]]
    sc["steps"] = [{"run": EDIT}, {"switch_project": 1}]
    out = run(env["tmp"], sc)
    for j in inbox_jobs(env["spool"]).values():
        pick_up(env["spool"], j["id"])
        write_status(env["spool"], j, "done")
    st = {"extstate": persisted(out), "projextstate": {}}
    sc2 = dict(sc, **st, steps=[{"run": JOBS}, {"defer": 2}], active_project=1)
    sc2["projects"] = [sc["projects"][0], dict(other, projextstate=out["projects"][1]["projextstate"])]
    out2 = run(env["tmp"], sc2)
    p1, p2 = out2["projects"]
    assert out2["errors"] == []
    assert p1["undo"] == [] and not p1["dirty"]
    assert p2["undo"][0::2] == ["begin"] * 3 and p2["dirty"] and out2["open_undo"] == 0
    assert all(len(it["takes"]) == 2 for tr in p2["tracks"] for it in tr["items"])


def test_unreadable_take_fails_the_job_and_leaves_refresh_and_undo_balanced(env):
    # defect 6: the take file cannot be opened as audio (PCM_Source_CreateFromFile -> nil)
    st, jobs = submit_and_finish(env)
    kick = jobs["Kick 03"]
    (env["spool"] / "jobs" / kick["id"] / "takes" / "eta0.50.wav").write_bytes(b"not a wav")
    out = jobs_session(env, st, [{"defer": 4}])
    assert out["errors"] == [] and out["refresh_depth"] == 0 and out["open_undo"] == 0
    reg = registry(out)
    assert reg[kick["id"]]["state"] == "failed" and "cannot read" in reg[kick["id"]]["message"]
    assert len(items_by_guid(out)[G1]["takes"]) == 1  # nothing half-imported, and no stray take per poll
    assert reg[jobs["Snare"]["id"]]["state"] == "imported"


def test_take_envelopes_are_refused(env):
    # defect 7a: a take volume envelope changes what is heard; the file and the accessor lack it
    env["scenario"]["tracks"][0]["items"][1]["takes"][0]["envelopes"] = {"Volume": {"points": 3}}
    env["scenario"]["tracks"][0]["items"][0]["takes"][0]["envelopes"] = {"Pan": {"points": 0}}  # empty: fine
    out = edit(env)
    assert "Snare: take has a volume envelope" in out["messages"][0]["msg"]
    assert set(by_label(inbox_jobs(env["spool"]))) == {"Kick 03", "Door"}


def test_rendered_item_trimmed_meanwhile_stays_aligned(env):
    # defect 7b: a rendered (rate 1, timeline) take after the original's left edge moved by 0.4 s of source
    door = env["scenario"]["tracks"][1]["items"][0]
    door["takes"][0]["source"]["type"] = "SECTION"
    door["takes"][0]["playrate"] = 2.0
    st, _ = submit_and_finish(env)
    door["takes"][0]["startoffs"] = 0.9  # was 0.5: trimmed by 0.4 s of source = 0.2 s of timeline
    door["position"], door["length"] = 10.2, 1.8
    out = jobs_session(env, st, [{"defer": 2}])
    new = items_by_guid(out)[G3]["takes"][1]
    assert new["values"]["D_PLAYRATE"] == 1.0 and new["values"]["D_STARTOFFS"] == pytest.approx(0.2)


def test_polling_cost_stays_flat_with_many_jobs(env, tmp_path):
    # defect 3: 300 queued jobs; a poll must not rewrite or re-decode the bookkeeping of every job
    items = [{"guid": f"{{J{i:04d}}}", "position": i * 2.0, "length": 1.0, "selected": True,
              "takes": [{"name": f"J{i}", "source": wave_source(env["a"])}]} for i in range(300)]
    env["scenario"]["tracks"] = [{"name": "Many", "items": items}]
    out = edit(env, answers=[["x", "0.5", "lora", "1"]], steps=[{"run": EDIT}, {"defer": 1}, {"reset_counts": True},
                                                                  {"defer": 20}], mb_answers=[6])
    assert out["errors"] == [] and len(registry(out)) == 300
    c = out["counts"]
    assert c.get("SetProjExtState", 0) == 0  # nothing changed: nothing written
    assert c.get("GetExtState", 0) <= 3 * 20 and c.get("SetExtState", 0) <= 20
    assert out["opens"].get(str(env["spool"] / "daemon.json"), 0) <= 6  # not once per frame (20 frames, 10 s)
    # status reads are capped per poll (round robin), not 300 per tick
    status_reads = sum(n for p, n in out["opens"].items() if p.endswith("status.json"))
    assert status_reads <= 50 * 20


def test_closing_a_project_tab_drops_its_jobs_from_the_window(env):
    out = edit(env)
    assert out["projects"][0]["dirty"]  # the job list is saved with the project: it asks to be saved
    jobs = by_label(inbox_jobs(env["spool"]))
    for j in jobs.values():
        pick_up(env["spool"], j["id"])
        write_status(env["spool"], j, "running", stage="sampling", progress=0.5)
    other = {"tracks": env["scenario"]["tracks"], "project_path": str(env["project"]),
             "projextstate": out["projects"][0]["projextstate"]}
    sc = dict(env["scenario"], extstate=persisted(out), projects=[{"tracks": []}, other],
              steps=[{"run": JOBS}, {"defer": 1}, {"close_project": 2}, {"defer": 6}])
    out2 = run(env["tmp"], sc)
    assert out2["errors"] == [] and out2["jobs_active"] == 0
    assert not any(t.startswith(("Kick 03", "Snare", "Door")) for t in out2["gfx_text"])


def test_jobs_resume_when_the_project_is_reopened(env):
    # defect 8: bookkeeping is saved with the project; another session (no global ExtState) resumes it
    out = edit(env)
    for j in inbox_jobs(env["spool"]).values():
        pick_up(env["spool"], j["id"])
        write_status(env["spool"], j, "done")
    state = {"extstate": {"aiedit/spool": str(env["spool"])},
             "projextstate": out["projects"][0]["projextstate"]}
    out2 = jobs_session(env, state, [{"defer": 2}])
    assert all(r["state"] == "imported" for r in registry(out2).values()) and len(registry(out2)) == 3
    assert all(len(it["takes"]) == 4 for it in items_by_guid(out2).values())


def test_spool_default_follows_the_daemon(env):
    # defect 9: no setting -> $AIEDIT_SPOOL, as `aiedit serve` uses
    sc = dict(env["scenario"], extstate={}, user_inputs=[["x", "0.5", "lora", "1"]], steps=[{"run": EDIT}])
    out = run(env["tmp"], sc, env={"AIEDIT_SPOOL": str(env["spool"]), "HOME": str(env["tmp"] / "home")})
    assert out["messages"] == [] and len(inbox_jobs(env["spool"])) == 3
    home = env["tmp"] / "home"
    heartbeat(home / ".aiedit" / "spool")
    out = run(env["tmp"], sc | {"user_inputs": [["x", "0.5", "lora", "1"]]}, env={"HOME": str(home)})
    assert len(inbox_jobs(home / ".aiedit" / "spool")) == 3


def test_early_return_adds_no_undo_point(env):
    for tr in env["scenario"]["tracks"]:
        for it in tr["items"]:
            it["selected"] = False
    out = edit(env, answers=[])
    assert out["undo"] == [] and out["pending_defer"] == 1  # the defer no-op idiom
    out = run(env["tmp"], dict(env["scenario"], user_inputs=[False], steps=[{"run": SETTINGS}]))
    assert out["undo"] == []


def test_window_font_and_scrolling(env):
    items = [{"guid": f"{{S{i:03d}}}", "position": i * 2.0, "length": 1.0, "selected": True,
              "takes": [{"name": f"Row{i:02d}", "source": wave_source(env["a"])}]} for i in range(30)]
    env["scenario"]["tracks"] = [{"name": "Many", "items": items}]
    out = edit(env, answers=[["x", "0.5", "lora", "1"]], steps=[{"run": EDIT}, {"defer": 1}])
    assert out["font"]["size"] > 0 and out["font"]["face"]
    assert not any(t.startswith("Row29") for t in out["gfx_text"])
    out = edit(env, answers=[["x", "0.5", "lora", "1"]],
               steps=[{"run": EDIT}, {"defer": 1}] + [{"wheel": -120}] * 12)
    assert any(t.startswith("Row29") for t in out["gfx_text"])


def test_razor_edit_areas_choose_items_and_ranges(env):
    tr = env["scenario"]["tracks"][0]
    tr["razor"] = '3.0 3.5 "" 6.5 7.0 "{ENVGUID}"'  # a media-lane area over Kick; an envelope area is ignored
    for t in env["scenario"]["tracks"]:
        for it in t["items"]:
            it["selected"] = False
    out = edit(env, time_selection=[0, 0])
    assert out["errors"] == []
    jobs = by_label(inbox_jobs(env["spool"]))
    assert set(jobs) == {"Kick 03"}
    assert jobs["Kick 03"]["inpaint"] == {"start": pytest.approx(1.5), "end": pytest.approx(2.25)}


def test_results_on_a_new_track(env):
    # issue 18 medium 5: one muted track per η below the item's track, so nothing plays on top of the original
    st, _ = submit_and_finish(env)
    st["extstate"]["aiedit/results"] = "track"
    out = jobs_session(env, st, [{"defer": 4}])
    assert out["errors"] == [] and out["open_undo"] == 0
    names = [t["name"] for t in out["tracks"]]
    assert names[:4] == ["Drums", "AI η=0.30 · Drums", "AI η=0.50 · Drums", "AI η=0.70 · Drums"]
    new = out["tracks"][1:4]
    assert all(t["new"] and t["mute"] == 1 for t in new)  # nothing new plays until the user unmutes one
    assert all(len(t["items"]) == 2 for t in new)  # Kick and Snare share the η tracks (reused by the 2nd import)
    assert names[4:] == ["FX", "AI η=0.30 · FX", "AI η=0.50 · FX", "AI η=0.70 · FX"]
    assert out["tracks"][0]["mute"] == 0 and out["tracks"][4]["mute"] == 0  # the originals play, untouched
    assert all(len(it["takes"]) == 1 for tr in out["tracks"] if not tr["new"] for it in tr["items"])
    kick = items_by_guid(out)[G1]
    assert new[0]["items"][0]["values"]["D_POSITION"] == kick["values"]["D_POSITION"]
    assert new[1]["items"][0]["takes"][0]["ext"]["aiedit_best"] == "1"  # best = 1 is the η=0.50 track's item
    shown = "\n".join(out["gfx_text"])
    assert "on muted tracks below 'Drums'" in shown and "unmute one" in shown


def test_results_in_fixed_lanes(env):
    st, _ = submit_and_finish(env)
    st["extstate"]["aiedit/results"] = "lanes"
    out = jobs_session(env, st, [{"defer": 2}])
    assert out["errors"] == [] and out["open_undo"] == 0
    drums = out["tracks"][0]
    # issue 24: one named lane per η, shared by Kick and Snare (not 3 new unnamed lanes per item)
    assert drums["freemode"] == 2 and drums["lanes"] == 4
    assert drums["lane_names"] == ["", "AI η=0.30", "AI η=0.50", "AI η=0.70"]
    assert drums["laneplays"] == [1, 0, 0, 0]  # only the original lane sounds
    kick_pos = items_by_guid(out)[G1]["values"]["D_POSITION"]
    lanes = sorted(it["values"]["I_FIXEDLANE"] for it in drums["items"] if it["values"]["D_POSITION"] == kick_pos)
    assert lanes == [0, 1, 2, 3]
    assert len(items_by_guid(out)[G1]["takes"]) == 1


def test_settings_results_choice(env):
    sc = dict(env["scenario"], user_inputs=[["", "aiedit serve", "yes", "", "", "rows"],
                                            ["", "aiedit serve", "yes", "", "", "Lanes"]],
              steps=[{"run": SETTINGS}])
    out = run(env["tmp"], sc)
    assert out["inputs_asked"][1]["labels"][5] == "! Results as: takes / track / lanes"
    assert persisted(out)["aiedit/results"] == "lanes" and out["errors"] == []


def test_luacheck_clean():
    exe = shutil.which("luacheck")
    if exe is None:
        pytest.skip("luacheck is not installed (bash scripts/dev setup installs it)")
    cmd = [exe, "--codes", "--no-color", "--config", "tests/lua/luacheckrc", "reaper_scripts", "tests/lua"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:]


# ---------------------------------------------------------------------------------------------------------------
# issue 18: REAPER round 2, each defect under the fake extended with the documented behaviour


def test_upper_cased_ext_state_keys_still_import(env):
    # possibly critical: EnumProjExtState may give the keys back upper-cased; the jobs must still be found
    out = edit(env, ext_keys_upper=True)
    keys = [k for k in out["projects"][0]["projextstate"] if k.startswith("aiedit.jobs/")]
    assert len(keys) == 3 and all(k.split("/", 1)[1] == k.split("/", 1)[1].upper() for k in keys)
    st = saved(out)
    for j in inbox_jobs(env["spool"]).values():
        pick_up(env["spool"], j["id"])
        write_status(env["spool"], j, "done", best=1)
    out = jobs_session(env, st, [{"defer": 4}], ext_keys_upper=True)
    assert out["errors"] == []
    assert {r["state"] for r in registry(out).values()} == {"imported"}
    assert all(len(it["takes"]) == 4 for it in items_by_guid(out).values())
    # and the records were updated in place, not duplicated under a second key
    assert len([k for k in out["projects"][0]["projextstate"] if k.startswith("aiedit.jobs/")]) == 3


def test_closing_a_tab_while_its_job_finishes_keeps_the_window(env):
    # medium 1: the tab closes, its job finishes before the window noticed: nothing may touch the closed project
    out = edit(env)
    jobs = by_label(inbox_jobs(env["spool"]))
    done = {}
    for label, j in jobs.items():
        pick_up(env["spool"], j["id"])
        done[label] = json.dumps(write_status(env["spool"], j, "done"))
        write_status(env["spool"], j, "running", stage="sampling", progress=0.5)
    other = {"tracks": env["scenario"]["tracks"], "project_path": str(env["project"]),
             "projextstate": out["projects"][0]["projextstate"]}
    kick_status = env["spool"] / "jobs" / jobs["Kick 03"]["id"] / "status.json"
    sc = dict(env["scenario"], extstate=persisted(out), projects=[{"tracks": []}, other],
              steps=[{"run": JOBS}, {"defer": 1}, {"close_project": 2},
                     {"write_file": {"path": str(kick_status), "text": done["Kick 03"]}}, {"defer": 6}])
    out2 = run(env["tmp"], sc)
    assert out2["errors"] == []
    assert out2["gfx_open"] and out2["pending_defer"] == 1  # the window still runs
    assert not any("Kick 03" in t for t in out2["gfx_text"])


def test_file_open_in_the_same_tab_keeps_jobs_apart(env):
    # medium 2: File > Open in the same tab keeps the ReaProject*; A's jobs must not land in B
    out = edit(env)
    jobs = by_label(inbox_jobs(env["spool"]))
    done = {}
    for label, j in jobs.items():
        pick_up(env["spool"], j["id"])
        done[label] = json.dumps(write_status(env["spool"], j, "done"))
        write_status(env["spool"], j, "running", stage="sampling", progress=0.5)
    b_tracks = [{"name": "B", "items": [{"guid": "{BBBB}", "position": 1.0, "length": 1.0,
                                         "takes": [{"name": "Bee", "source": wave_source(env["a"])}]}]}]
    steps = [{"run": JOBS}, {"defer": 1},
             {"open_in_tab": {"index": 1, "project": {"tracks": b_tracks, "file": str(env["tmp"] / "b.rpp"),
                                                      "project_path": str(env["tmp"] / "b")}}}]
    steps += [{"write_file": {"path": str(env["spool"] / "jobs" / j["id"] / "status.json"), "text": done[k]}}
              for k, j in jobs.items()]
    steps += [{"defer": 6}]
    out2 = jobs_session(env, saved(out), steps[1:])
    assert out2["errors"] == []
    b = out2["projects"][0]
    assert b["projextstate"] == {}  # nothing of A's written into B
    assert [len(it["takes"]) for tr in b["tracks"] for it in tr["items"]] == [1] and b["undo"] == []
    assert not any("item gone" in t for t in out2["gfx_text"])
    assert not any(t.startswith(("Kick 03", "Snare", "Door")) for t in out2["gfx_text"])


def test_new_unsaved_project_in_the_same_tab_drops_the_old_rows(env):
    # medium 2, the case a file name cannot tell: an unsaved project replaced by another unsaved one in its tab
    unsaved = {"tracks": env["scenario"]["tracks"], "file": "", "project_path": str(env["project"])}
    out = edit(env, projects=[unsaved])
    jobs = by_label(inbox_jobs(env["spool"]))
    for j in jobs.values():
        pick_up(env["spool"], j["id"])
        write_status(env["spool"], j, "running", stage="sampling", progress=0.5)
    sc = dict(env["scenario"], extstate=persisted(out), projects=[dict(unsaved, **saved(out))],
              steps=[{"run": JOBS}, {"defer": 1},
                     {"open_in_tab": {"index": 1, "project": {"tracks": [], "file": ""}}}, {"defer": 3}])
    out2 = run(env["tmp"], sc)
    assert out2["errors"] == [] and out2["projects"][0]["projextstate"] == {}
    assert not any(t.startswith(("Kick 03", "Snare", "Door")) for t in out2["gfx_text"])
    assert out2["jobs_active"] == 0


def test_new_track_results_before_reaper_7_18(env):
    # medium 3: InsertTrackInProject is 7.18+; 7.08 must still make the tracks, and wait for the tab if needed
    st, _ = submit_and_finish(env)
    st["extstate"]["aiedit/results"] = "track"
    out = jobs_session(env, st, [{"defer": 4}], reaper_version="7.08")
    assert out["errors"] == [] and {r["state"] for r in registry(out).values()} == {"imported"}
    assert [t["name"] for t in out["tracks"]][:2] == ["Drums", "AI η=0.30 · Drums"]
    # the item's project is another tab: the import waits (nothing copied) until that tab is active
    st2, _ = submit_and_finish(env)
    st2["extstate"]["aiedit/results"] = "track"
    other = {"tracks": env["scenario"]["tracks"], "project_path": str(env["project"]),
             "projextstate": st2["projextstate"]}
    sc = dict(env["scenario"], extstate=st2["extstate"], projects=[{"tracks": []}, other], reaper_version="7.08",
              steps=[{"run": JOBS}, {"defer": 2}])
    out = run(env["tmp"], sc)
    assert out["errors"] == [] and out["jobs_active"] == 3
    assert any("switch to its project tab" in t for t in out["gfx_text"])
    assert len(out["projects"][1]["tracks"]) == 2 and out["projects"][1]["undo"] == []
    sc["steps"] = [{"run": JOBS}, {"defer": 2}, {"switch_project": 2}, {"defer": 4}]
    out = run(env["tmp"], sc)
    assert out["errors"] == [] and {r["state"] for r in registry(out).values()} == {"imported"}
    assert len(out["projects"][1]["tracks"]) == 8


def test_lanes_on_reaper_6_become_muted_tracks(env):
    # medium 4: UpdateTimeline exists since 6.24 but lanes only since 7: nothing may stack on the original track
    st, _ = submit_and_finish(env)
    st["extstate"]["aiedit/results"] = "lanes"
    out = jobs_session(env, st, [{"defer": 4}], reaper_version="6.83")
    assert out["errors"] == []
    drums = out["tracks"][0]
    assert len(drums["items"]) == 2 and drums["freemode"] == 0  # only the two originals
    assert [t["name"] for t in out["tracks"]][1] == "AI η=0.30 · Drums" and out["tracks"][1]["mute"] == 1
    assert any("REAPER 6 has no fixed lanes" in t for t in out["gfx_text"])


def test_razor_area_on_one_lane_and_two_areas_on_one_item(env):
    # medium 6: lane extents live only in P_RAZOREDITS_EXT; a second area on the same item is a second job
    lanes = {"name": "Comp", "freemode": 2, "lanes": 2, "items": [
        {"guid": "{LANE0}", "position": 2.0, "length": 2.0, "lane": 0,
         "takes": [{"name": "Lane0", "source": wave_source(env["a"])}]},
        {"guid": "{LANE1}", "position": 2.0, "length": 2.0, "lane": 1,
         "takes": [{"name": "Lane1", "source": wave_source(env["a"])}]}],
        "razor_ext": '2.5 3.0 "" 0.5 1.0,3.2 3.6 "" 0.5 1.0'}
    env["scenario"]["tracks"] = [lanes]
    out = edit(env, time_selection=[0, 0])
    assert out["errors"] == []
    jobs = list(inbox_jobs(env["spool"]).values())
    assert sorted(j["label"] for j in jobs) == ["Lane1", "Lane1"]
    assert sorted((j["inpaint"]["start"], j["inpaint"]["end"]) for j in jobs) == [
        (pytest.approx(0.5), pytest.approx(1.0)), (pytest.approx(1.2), pytest.approx(1.6))]


def test_apostrophe_in_the_remembered_prompt(env):
    # medium 7: GetUserInputs reads defaults quote-aware; one apostrophe must not move the other fields
    ext = {"aiedit/spool": str(env["spool"]), "aiedit/last_prompt": "don't stop", "aiedit/last_etas": "0.3, 0.5",
           "aiedit/last_mode": "sdedit", "aiedit/last_seed": "9"}
    out = edit(env, answers=[False], extstate=ext)
    assert out["errors"] == []
    assert out["inputs_asked"][0]["values"] == ["don’t stop", "0.3, 0.5", "sdedit", "9"]
    # accepted as shown: the prompt sent is the remembered one, apostrophe and all
    out = edit(env, answers=[["don’t stop", "0.3, 0.5", "sdedit", "9"]], extstate=ext)
    assert {j["prompt"] for j in inbox_jobs(env["spool"]).values()} == {"don't stop"}
    assert persisted(out)["aiedit/last_prompt"] == "don't stop"


def test_trim_while_the_render_waits_keeps_takes_aligned(env):
    # medium 8: the render reads the item as it is then; the job and the bookkeeping must describe the same audio
    env["scenario"]["tracks"][0]["items"][1]["length"] = 12.0  # Snare: rendered (loops past its 10 s source)
    trim = {"guid": G2, "item": {"D_POSITION": 6.5, "D_LENGTH": 11.5}, "take": {"D_STARTOFFS": 0.75}}
    out = edit(env, steps=[{"run": EDIT}, {"edit_item": trim}, {"defer": 10}])
    assert out["errors"] == []
    snare = by_label(inbox_jobs(env["spool"]))["Snare"]
    assert snare["source"]["length"] == pytest.approx(11.5)
    assert sf.info(snare["source"]["path"]).frames == round(11.5 * 48000)
    st = saved(out)
    pick_up(env["spool"], snare["id"])
    write_status(env["spool"], snare, "done")
    snare_item = env["scenario"]["tracks"][0]["items"][1]
    snare_item.update(position=6.5, length=11.5)
    snare_item["takes"][0]["startoffs"] = 0.75
    out = jobs_session(env, st, [{"defer": 2}])
    new = items_by_guid(out)[G2]["takes"][1]
    assert new["values"]["D_STARTOFFS"] == pytest.approx(0.0)  # the render already starts where the item does


def test_prompt_limit_counts_characters(env):
    prompt = "音" * 400  # 400 characters, 1200 bytes
    out = edit(env, answers=[[prompt, "0.5", "lora", "1"]])
    assert out["errors"] == [] and out["messages"] == []
    assert {j["prompt"] for j in inbox_jobs(env["spool"]).values()} == {prompt}


def test_imports_are_bounded_per_tick(env):
    ext, _ = submit_and_finish(env)
    out = jobs_session(env, ext, [])  # the window's first tick only
    assert len(out["undo"]) == 4  # two imports (begin + end each), the third waits
    out = jobs_session(env, ext, [{"defer": 1}])
    assert len(out["undo"]) == 6 and {r["state"] for r in registry(out).values()} == {"imported"}


def test_start_now_failures_are_reported(env):
    heartbeat(env["spool"], age=30)
    out = edit(env, mb_answers=[6], exec_fails=True)
    assert "not a full path" in out["messages"][0]["msg"]  # the default "aiedit serve" relies on PATH
    assert "Could not start the engine" in out["messages"][1]["msg"]
    assert len(inbox_jobs(env["spool"])) == 3  # queued anyway
    for p in (env["spool"] / "inbox").glob("*.json"):
        p.unlink()
    out = edit(env, mb_answers=[6], steps=[{"run": EDIT}, {"defer": 50}])  # started, but no heartbeat follows
    assert len(out["messages"]) == 1
    assert any("the engine did not start within 20 s" in t for t in out["gfx_text"])


def test_jobs_window_survives_a_long_dialog(env):
    # the heartbeat goes stale while a modal dialog blocks the defer loops; the toggle state does not
    out = edit(env, steps=[{"run": EDIT}, {"defer": 1}, {"run": EDIT}, {"defer": 1}], dialog_seconds=10,
               answers=[["a", "0.5", "lora", "1"], ["b", "0.5", "lora", "2"]])
    assert out["errors"] == [] and out["gfx_open"] and out["pending_defer"] == 1
    assert len(registry(out)) == 6
    # REAPER before 7.03 has no toggle state from a script: the heartbeat counts while it exists
    out = edit(env, steps=[{"run": EDIT}, {"defer": 1}, {"run": EDIT}, {"defer": 1}], dialog_seconds=10,
               answers=[["a", "0.5", "lora", "1"], ["b", "0.5", "lora", "2"]], reaper_version="6.83")
    assert out["errors"] == [] and out["gfx_open"] and out["task_control"] == []


def test_unsaved_project_waits_for_a_file_and_relative_sources_follow_their_project(env):
    st, _ = submit_and_finish(env)
    unsaved = {"tracks": env["scenario"]["tracks"], "file": "", "project_path": str(env["tmp"] / "default-media"),
               "projextstate": st["projextstate"]}
    sc = dict(env["scenario"], extstate=st["extstate"], projects=[unsaved], steps=[{"run": JOBS}, {"defer": 2}])
    out = run(env["tmp"], sc)
    assert out["errors"] == [] and out["jobs_active"] == 3 and out["undo"] == []
    assert not (env["tmp"] / "default-media").exists()  # nothing copied into REAPER's default folder
    assert any("save the project" in t for t in out["gfx_text"])
    sc["steps"] = [{"run": JOBS}, {"defer": 2},
                   {"save_project": {"index": 1, "file": str(env["project"] / "p.rpp"), "media": str(env["project"])}},
                   {"defer": 4}]
    out = run(env["tmp"], sc)
    assert out["errors"] == [] and {r["state"] for r in registry(out).values()} == {"imported"}
    assert all(t["source"]["file"].startswith(str(env["project"] / "aiedit"))
               for it in items_by_guid(out).values() for t in it["takes"][1:])
    # a relative source path is relative to its own project's folder, not to the active tab's
    p2 = env["tmp"] / "p2"
    p2.mkdir()
    write_wav(p2 / "rel.wav", 4.0)
    tab2 = {"tracks": [{"name": "R", "items": [{"guid": "{REL}", "position": 0.0, "length": 1.0, "selected": True,
                                                "takes": [{"name": "Rel", "source": wave_source(Path("rel.wav"))}]}]}],
            "file": str(p2 / "two.rpp"), "project_path": str(p2 / "media")}
    sc = dict(env["scenario"], projects=[{"tracks": [], "project_path": str(env["tmp"] / "one")}, tab2],
              active_project=1, user_inputs=[["x", "0.5", "lora", "1"]],
              steps=[{"switch_project": 2}, {"run": EDIT}])
    sc["projects"][1]["tracks"][0]["items"][0]["takes"][0]["source"]["file"] = "rel.wav"
    out = run(env["tmp"], sc)
    assert out["errors"] == [] and out["messages"] == []
    assert [j["source"]["path"] for j in inbox_jobs(env["spool"]).values()] == [str(p2 / "rel.wav")]


def test_dialog_names_the_wrong_field_in_its_caption(env):
    out = edit(env, answers=[["x", "0.5", "zetta", "1"], False])
    labels = out["inputs_asked"][1]["labels"]
    assert labels[2].startswith("! Mode: one of lora / full / flowedit / zeta / sdedit")
    assert labels[0] == "Prompt" and labels[3] == "Seed (empty = random)"
    # each caption names its own field only ("zeta" holds "eta": the η field is never called "eta")
    for i, name in enumerate(["prompt", "η", "mode", "seed"]):
        assert [name in lab.lower() for lab in labels] == [j == i for j in range(4)], (name, labels)
    assert not any(re.search(r"\beta\b", lab) for lab in labels)
    assert out["messages"] == [] and inbox_jobs(env["spool"]) == {}


def test_dialog_offers_the_daemons_modes(env):
    heartbeat(env["spool"], modes=["lora", "full", "flowedit", "sdedit"])
    out = edit(env, answers=[["x", "0.6", "preview", "1"]], extstate={"aiedit/spool": str(env["spool"]),
                                                                      "aiedit/last_mode": "zeta"})
    asked = out["inputs_asked"][0]
    assert asked["labels"][2] == "Mode (lora / full / flowedit / sdedit)"
    assert asked["values"][2] == "lora"  # the remembered zeta is not offered by this model
    assert {j["mode"] for j in inbox_jobs(env["spool"]).values()} == {"flowedit"}
    for p in (env["spool"] / "inbox").glob("*.json"):
        p.unlink()
    out = edit(env, answers=[["x", "0.6", "zeta", "1"], False])
    assert out["inputs_asked"][1]["labels"][2].startswith("! Mode: one of lora / full / flowedit / sdedit")
    heartbeat(env["spool"], modes=["lora", "full", "zeta", "sdedit"])
    edit(env, answers=[["x", "0.6", "preview", "1"]])
    assert {j["mode"] for j in inbox_jobs(env["spool"]).values()} == {"zeta"}


def test_jobs_window_shows_each_jobs_worker(env):
    out = edit(env)
    jobs = by_label(inbox_jobs(env["spool"]))
    for j in jobs.values():
        pick_up(env["spool"], j["id"])
    write_status(env["spool"], jobs["Kick 03"], "running", stage="sampling", progress=0.4, worker="cuda:1@studio-2")
    write_status(env["spool"], jobs["Snare"], "running", stage="finetune", progress=0.2)  # an old daemon: no worker
    out = jobs_session(env, saved(out), [{"defer": 1}])
    rows = [t for t in out["gfx_text"] if t.startswith(("Kick 03", "Snare"))]
    assert "Kick 03  ·  sampling  ·  cuda:1@studio-2" in rows and "Snare  ·  finetune" in rows
    assert "engine: running, model tiny" in out["gfx_text"]  # an old daemon.json: no workers listed
    heartbeat(env["spool"], workers=[{"name": "cuda:0@studio-2", "state": "busy", "job": jobs["Kick 03"]["id"]},
                                     {"name": "cuda:1@studio-2", "state": "idle", "job": None}])
    out = jobs_session(env, saved(out), [{"defer": 1}])
    assert "engine: running, model tiny, 2 workers (1 busy)" in out["gfx_text"]


def test_batch_queues_every_job_at_once(env):
    # issue 19: with several workers the daemon runs a batch side by side, so the client queues all of it at once
    # (only items that must be rendered wait for their own render, one slice per UI tick)
    extra = [{"guid": f"{{B{i}}}", "position": 20.0 + i * 2, "length": 1.0,
              "takes": [{"name": f"B{i}", "source": wave_source(env["a"])}]} for i in range(5)]
    env["scenario"]["tracks"][1]["items"] += extra
    sc = dict(env["scenario"], user_inputs=[["metal", "0.5", "lora", "1", "project", "no"]], steps=[{"run": BATCH}])
    out = run(env["tmp"], sc)
    assert out["errors"] == []
    assert len(inbox_jobs(env["spool"])) == 8 and out["messages"][0]["msg"].startswith("8 jobs queued.")


# ---------------------------------------------------------------------------------------------------------------
# issue 24: the third review's findings, each under the fake extended with the documented behaviour


def _reject(spool: Path, name: str, why: str) -> None:
    """What the daemon does with an inbox file it refuses (bridge/spool.py reject): moved, reason beside it."""
    rej = spool / "inbox" / "rejected"
    rej.mkdir(parents=True, exist_ok=True)
    (spool / "inbox" / name).rename(rej / name)
    (rej / f"{name}.error.txt").write_text(why + "\n", encoding="utf-8")


def test_refused_job_shows_the_refusal_within_one_poll(env):
    # high: a job refused for its token gets no status.json: the row said "waiting for the engine" for ever
    out = edit(env)
    jobs = by_label(inbox_jobs(env["spool"]))
    _reject(env["spool"], f"{jobs['Kick 03']['id']}.json", "refused: wrong or missing token")
    out = jobs_session(env, saved(out), [])  # the window's first tick only
    rec = registry(out)[jobs["Kick 03"]["id"]]
    assert rec["state"] == "failed" and rec["message"] == "refused by the engine: refused: wrong or missing token"
    assert any("refused by the engine: refused: wrong or missing token" in t for t in out["gfx_text"])
    assert registry(out)[jobs["Snare"]["id"]]["state"] == "submitted"  # still in the inbox: waits


def test_job_the_engine_never_records_fails_after_a_grace_and_cancels_too(env):
    # high: no inbox file and no status (pruned after --keep-days, lost): a clear line after a grace, not "waiting"
    out = edit(env)
    jobs = by_label(inbox_jobs(env["spool"]))
    for j in jobs.values():
        pick_up(env["spool"], j["id"])
    snare = jobs["Snare"]["id"]
    steps = [{"defer": 2}, {"click": f"cancel:{snare}"}, {"defer": 2}]
    out = jobs_session(env, saved(out), steps)
    assert {r["state"] for r in registry(out).values()} == {"submitted", "cancelling"}  # within the grace
    out = jobs_session(env, saved(out), [{"defer": 2}, {"advance_clock": 31}, {"defer": 2}])
    reg = registry(out)
    kick = reg[jobs["Kick 03"]["id"]]
    assert kick["state"] == "failed" and kick["message"].startswith("the engine has no record of this job")
    assert "--keep-days" in kick["message"]
    assert reg[snare]["state"] == "cancelled"  # the cancel no longer hangs at "cancelling…"
    assert out["jobs_active"] == 0


def test_waiting_imports_do_not_take_the_import_slots(env):
    # medium: two finished jobs of an unsaved project took both import slots on every poll
    unsaved = {"tracks": env["scenario"]["tracks"], "file": "", "project_path": str(env["tmp"] / "default")}
    other = {"tracks": [{"name": "B", "items": [{"guid": "{BBBB}", "position": 1.0, "length": 1.0, "selected": True,
                                                 "takes": [{"name": "Bee", "source": wave_source(env["a"])}]}]}],
             "file": str(env["tmp"] / "b" / "b.rpp"), "project_path": str(env["tmp"] / "b")}
    sc = dict(env["scenario"], projects=[unsaved, other], user_inputs=[["x", "0.5", "lora", "1"]] * 2,
              steps=[{"run": EDIT}, {"defer": 1}, {"switch_project": 2}, {"run": EDIT}])
    out = run(env["tmp"], sc)
    assert out["errors"] == [] and len(registry(out, 0)) == 3 and len(registry(out, 1)) == 1, out["messages"]
    for j in inbox_jobs(env["spool"]).values():
        pick_up(env["spool"], j["id"])
        write_status(env["spool"], j, "done")
    sc2 = dict(sc, extstate=persisted(out), steps=[{"run": JOBS}, {"defer": 4}])
    sc2["projects"] = [dict(unsaved, projextstate=out["projects"][0]["projextstate"]),
                       dict(other, projextstate=out["projects"][1]["projextstate"])]
    out2 = run(env["tmp"], sc2)
    assert out2["errors"] == []
    assert [r["state"] for r in registry(out2, 1).values()] == ["imported"]
    assert {r["state"] for r in registry(out2, 0).values()} == {"running"}  # waiting for a file, still listed


def test_second_result_for_the_same_item_and_strength_never_lands_on_top(env):
    # medium: the reused η track (and lane) got a second item over the first
    for target in ("track", "lanes"):
        st, _ = submit_and_finish(env)
        st["extstate"]["aiedit/results"] = target
        out = jobs_session(env, st, [{"defer": 4}])
        st2 = {"extstate": st["extstate"], "projextstate": {}}
        sc_tracks = out["tracks"]
        for p in (env["spool"] / "inbox").glob("*.json"):
            p.unlink()
        env2 = dict(env, scenario=dict(env["scenario"], tracks=_as_scenario(sc_tracks)))
        out_b = edit(env2, extstate=st["extstate"])
        for j in inbox_jobs(env["spool"]).values():
            pick_up(env["spool"], j["id"])
            write_status(env["spool"], j, "done")
        st2["projextstate"] = out_b["projects"][0]["projextstate"]
        out2 = jobs_session(env2, st2, [{"defer": 4}])
        assert out2["errors"] == []
        for tr in out2["tracks"]:
            spans = {}
            for it in tr["items"]:
                lane = it["values"].get("I_FIXEDLANE") or 0
                spans.setdefault(lane, []).append((it["values"]["D_POSITION"], it["values"]["D_LENGTH"]))
            for xs in spans.values():
                xs.sort()
                assert all(a[0] + a[1] <= b[0] + 1e-9 for a, b in itertools.pairwise(xs)), (target, tr["name"], xs)
        if target == "track":
            names = [t["name"] for t in out2["tracks"]]
            assert "AI η=0.50 · Drums" in names and "AI η=0.50 · Drums (2)" in names
        else:
            assert "AI η=0.50 (2)" in out2["tracks"][0]["lane_names"]
        for p in (env["spool"] / "inbox").glob("*.json"):
            p.unlink()


def _as_scenario(tracks: list) -> list:
    """A dumped project's tracks as a scenario's (the next session starts from them)."""
    out = []
    for tr in tracks:
        items = []
        for it in tr["items"]:
            takes = [{"guid": t["guid"], "name": t["name"], "ext": t["ext"], "startoffs": t["values"]["D_STARTOFFS"],
                      "playrate": t["values"]["D_PLAYRATE"], "source": t["source"]} for t in it["takes"]]
            active = next(i for i, t in enumerate(it["takes"]) if t["guid"] == it["active_take"]) + 1
            items.append({"guid": it["guid"], "position": it["values"]["D_POSITION"],
                          "length": it["values"]["D_LENGTH"], "selected": not tr["new"] and len(takes) > 0,
                          "lane": it["values"].get("I_FIXEDLANE"), "takes": takes, "active_take": active})
        out.append({"name": tr["name"], "items": items, "new": tr["new"], "mute": tr["mute"],
                    "freemode": tr["freemode"] or None, "lanes": tr["lanes"], "laneplays": tr["laneplays"],
                    "lane_names": tr["lane_names"]})
    return out


def test_results_on_tracks_and_lanes_keep_the_items_fades_volume_snap_and_loop(env):
    # medium: results on tracks and lanes lost the item's volume, fades, fade shapes, snap offset and loop setting
    props = {"D_VOL": 0.5, "D_FADEINLEN": 0.1, "D_FADEOUTLEN": 0.2, "C_FADEINSHAPE": 3, "C_FADEOUTSHAPE": 4,
             "D_FADEINDIR": 0.25, "D_FADEOUTDIR": -0.5, "D_SNAPOFFSET": 0.05, "B_LOOPSRC": 1}
    env["scenario"]["tracks"][0]["items"][0]["values"] = props
    for target in ("track", "lanes"):
        st, jobs = submit_and_finish(env)
        st["extstate"]["aiedit/results"] = target
        out = jobs_session(env, st, [{"defer": 4}])
        results = [it for tr in out["tracks"] for it in tr["items"]
                   if it["takes"] and it["takes"][0]["ext"].get("aiedit_job") == jobs["Kick 03"]["id"]]
        assert len(results) == 3, target
        for it in results:
            assert {k: it["values"].get(k) for k in props} == props, target
        for p in (env["spool"] / "inbox").glob("*.json"):
            p.unlink()


def test_edited_fields_keep_their_ascii_quotes(env):
    # medium: the typographic stand-ins broke an edited JSON steps override and a quoted engine path, and edited
    # prompts reached the engine with ’
    ext = {"aiedit/spool": str(env["spool"]), "aiedit/steps": '{"sample":4}',
           "aiedit/engine_cmd": '"/opt/ai edit/aiedit" serve'}
    sc = dict(env["scenario"], extstate=ext, steps=[{"run": SETTINGS}],
              user_inputs=[["", '”/opt/ai edit/aiedit” serve --model toy', "yes", '{”sample”:8}', "", "takes"]])
    out = run(env["tmp"], sc)
    assert out["errors"] == []
    got = persisted(out)
    assert json.loads(got["aiedit/steps"]) == {"sample": 8}
    assert got["aiedit/engine_cmd"] == '"/opt/ai edit/aiedit" serve --model toy'
    ext2 = {"aiedit/spool": str(env["spool"]), "aiedit/last_prompt": "don't stop", "aiedit/last_etas": "0.5",
            "aiedit/last_mode": "lora", "aiedit/last_seed": "1"}
    edit(env, answers=[["don’t stop now", "0.5", "lora", "1"]], extstate=ext2)
    assert {j["prompt"] for j in inbox_jobs(env["spool"]).values()} == {"don't stop now"}


def test_long_non_ascii_prompt_keeps_the_job_record_small(env):
    # medium: a 1000-character Japanese prompt made a record past the ~4 KB an ext-state value holds: the job vanished
    prompt = "古い木の扉がきしむ音" * 100  # 1000 characters, 3000 bytes
    door = env["scenario"]["tracks"][1]["items"][0]
    door["takes"][0]["source"]["type"] = "SECTION"  # rendered first: its job waits until the render is done
    out = edit(env, answers=[[prompt, "0.3, 0.5, 0.7", "lora", "1"]])
    reg = registry(out)
    assert len(reg) == 3
    texts = [v for k, v in out["projects"][0]["projextstate"].items() if k.startswith("aiedit.jobs/")]
    assert all(len(t.encode()) <= 3000 for t in texts)
    for p in (env["spool"] / "inbox").glob("*.json"):
        p.unlink()
    out = edit(env, answers=[[prompt, "0.3, 0.5, 0.7", "lora", "1"]], steps=[{"run": EDIT}, {"defer": 8}])
    st = saved(out)
    for j in inbox_jobs(env["spool"]).values():
        assert j["prompt"] == prompt
        pick_up(env["spool"], j["id"])
        write_status(env["spool"], j, "done")
    out = jobs_session(env, st, [{"defer": 4}])
    assert out["errors"] == [] and len(registry(out)) == 3
    assert {r["state"] for r in registry(out).values()} == {"imported"}
    new = [t for it in items_by_guid(out).values() for t in it["takes"][1:]]
    assert new and all(t["ext"]["aiedit_prompt"] == prompt for t in new)


def test_unbalanced_parenthesis_in_the_remembered_prompt(env):
    # medium: GetUserInputs reads "(" in its defaults like a quote: every later field moved into the prompt
    ext = {"aiedit/spool": str(env["spool"]), "aiedit/last_prompt": "door (creaky", "aiedit/last_etas": "0.3, 0.5",
           "aiedit/last_mode": "sdedit", "aiedit/last_seed": "9"}
    out = edit(env, answers=[False], extstate=ext)
    assert out["errors"] == []
    assert out["inputs_asked"][0]["values"] == ["door （creaky", "0.3, 0.5", "sdedit", "9"]
    out = edit(env, answers=[["door （creaky", "0.3, 0.5", "sdedit", "9"]], extstate=ext)
    assert {j["prompt"] for j in inbox_jobs(env["spool"]).values()} == {"door (creaky"}


def test_rendering_keeps_the_items_pointer(env):
    # low: every UI tick of a render searched the whole project for its item
    filler = [{"guid": f"{{F{i:04d}}}", "position": 100.0 + i, "length": 0.5,
               "takes": [{"name": f"F{i}", "source": wave_source(env["a"])}]} for i in range(200)]
    env["scenario"]["tracks"].insert(0, {"name": "Filler", "items": filler})
    env["scenario"]["tracks"][1]["items"][1]["length"] = 30.0  # Snare: rendered (loops past its source), 15 ticks
    out = edit(env, steps=[{"run": EDIT}, {"defer": 2}, {"reset_counts": True}, {"defer": 5}])
    assert out["errors"] == [] and any("rendering" in t for t in out["gfx_text"])
    assert out["counts"].get("GetMediaItem", 0) <= 10


def test_scroll_is_clamped_when_rows_leave(env):
    # low: scrolled to the end, then most rows left (their tab closed): the window showed no row at all
    many = [{"guid": f"{{S{i:03d}}}", "position": i * 2.0, "length": 1.0, "selected": True,
             "takes": [{"name": f"Row{i:02d}", "source": wave_source(env["a"])}]} for i in range(30)]
    one = {"tracks": [{"name": "One", "items": [{"guid": "{ONE}", "position": 1.0, "length": 1.0, "selected": True,
                                                 "takes": [{"name": "Lonely", "source": wave_source(env["a"])}]}]}],
           "project_path": str(env["tmp"] / "one")}
    sc = dict(env["scenario"], projects=[{"tracks": [{"name": "Many", "items": many}],
                                          "project_path": str(env["project"])}, one],
              user_inputs=[["x", "0.5", "lora", "1"]] * 2,
              steps=[{"run": EDIT}, {"defer": 1}, {"switch_project": 2}, {"run": EDIT}, {"defer": 1},
                     *[{"wheel": -120}] * 12, {"close_project": 1}, {"defer": 2}])
    out = run(env["tmp"], sc)
    assert out["errors"] == []
    assert any(t.startswith("Lonely") for t in out["gfx_text"])


def test_batch_project_leaves_muted_and_silent_items_alone(env):
    # low: a whole-project batch re-edited the muted AI result tracks and lane items that do not play
    tracks = env["scenario"]["tracks"]
    tracks.append({"name": "AI η=0.50 · Drums", "mute": 1, "items": [
        {"guid": "{RES}", "position": 2.0, "length": 2.0, "takes": [{"name": "AI", "source": wave_source(env["a"])}]}]})
    tracks.append({"name": "Comp", "freemode": 2, "lanes": 2, "laneplays": [1, 0], "items": [
        {"guid": "{L0}", "position": 2.0, "length": 2.0, "lane": 0,
         "takes": [{"name": "Lane0", "source": wave_source(env["a"])}]},
        {"guid": "{L1}", "position": 2.0, "length": 2.0, "lane": 1,
         "takes": [{"name": "Lane1", "source": wave_source(env["a"])}]}]})
    tracks[0]["items"].append({"guid": "{MUTED}", "position": 9.0, "length": 1.0, "values": {"B_MUTE": 1},
                               "takes": [{"name": "Muted", "source": wave_source(env["a"])}]})
    sc = dict(env["scenario"], user_inputs=[["metal", "0.5", "lora", "1", "project", "no"]], steps=[{"run": BATCH}])
    out = run(env["tmp"], sc)
    assert out["errors"] == []
    assert set(by_label(inbox_jobs(env["spool"]))) == {"Kick 03", "Snare", "Door", "Lane0"}
    assert "3 muted or silent items" in out["messages"][0]["msg"]


def test_imports_wait_while_reaper_records(env):
    # low: results landed in the project while REAPER recorded
    st, _ = submit_and_finish(env)
    out = jobs_session(env, st, [{"defer": 3}], play_state=5)  # playing + recording
    assert out["undo"] == [] and out["jobs_active"] == 3
    assert any("waits while REAPER records" in t for t in out["gfx_text"])
    out = jobs_session(env, st, [{"defer": 2}, {"set_play_state": 0}, {"defer": 3}], play_state=5)
    assert {r["state"] for r in registry(out).values()} == {"imported"}


def test_items_that_play_all_takes_get_their_results_on_tracks(env):
    # low: new takes on an item with "play all takes" all sounded at once
    env["scenario"]["tracks"][0]["items"][0]["values"] = {"B_ALLTAKESPLAY": 1}
    st, _ = submit_and_finish(env)
    out = jobs_session(env, st, [{"defer": 4}])
    assert out["errors"] == []
    assert len(items_by_guid(out)[G1]["takes"]) == 1
    assert [t["name"] for t in out["tracks"]][1] == "AI η=0.30 · Drums" and out["tracks"][1]["mute"] == 1
    assert len(items_by_guid(out)[G2]["takes"]) == 4  # the other items still get takes
    assert any("plays all its takes at once" in t for t in out["gfx_text"])


def test_requeued_job_drops_its_dead_worker(env):
    # low: a job requeued after its Ray worker died kept showing that worker
    out = edit(env)
    kick = by_label(inbox_jobs(env["spool"]))["Kick 03"]
    pick_up(env["spool"], kick["id"])
    write_status(env["spool"], kick, "running", stage="sampling", progress=0.4, worker="cuda:1@studio-2")
    requeued = write_status(env["spool"], kick, "queued", worker=None)
    write_status(env["spool"], kick, "running", stage="sampling", progress=0.4, worker="cuda:1@studio-2")
    status = env["spool"] / "jobs" / kick["id"] / "status.json"
    out = jobs_session(env, saved(out), [{"defer": 1}, {"write_file": {"path": str(status),
                                                                        "text": json.dumps(requeued)}}, {"defer": 2}])
    assert not any("cuda:1@studio-2" in t for t in out["gfx_text"])
    assert registry(out)[kick["id"]].get("worker") is None


def test_many_items_are_queued_only_after_a_question(env):
    # low: hundreds of selected items were queued without a count and a question
    items = [{"guid": f"{{M{i:03d}}}", "position": i * 2.0, "length": 1.0, "selected": True,
              "takes": [{"name": f"M{i}", "source": wave_source(env["a"])}]} for i in range(60)]
    env["scenario"]["tracks"] = [{"name": "Many", "items": items}]
    out = edit(env, answers=[], mb_answers=[7])  # No
    assert "Queue 60 AI edit jobs?" in out["messages"][0]["msg"] and inbox_jobs(env["spool"]) == {}
    out = edit(env, answers=[["x", "0.5", "lora", "1"]], mb_answers=[6])
    assert len(inbox_jobs(env["spool"])) == 60


def test_new_result_tracks_adjust_the_track_list(env):
    # low: tracks were added without TrackList_AdjustWindows
    st, _ = submit_and_finish(env)
    st["extstate"]["aiedit/results"] = "track"
    out = jobs_session(env, st, [{"defer": 4}])
    assert out["counts"].get("TrackList_AdjustWindows", 0) >= 1


def test_decimal_comma_in_strengths(env):
    # low: "0,3 0,5" (a decimal comma) was read as 0, 3, 0, 5
    edit(env, answers=[["x", "0,3 0,5", "lora", "1"]])
    assert {tuple(j["etas"]) for j in inbox_jobs(env["spool"]).values()} == {(0.3, 0.5)}


def test_settings_never_show_the_token(env):
    # low: the token was shown in clear text in the settings dialog
    ext = {"aiedit/spool": str(env["spool"]), "aiedit/token": "s3cret-token"}
    keep = ["", "aiedit serve", "yes", "", "••••••••", "takes"]
    out = run(env["tmp"], dict(env["scenario"], extstate=ext, user_inputs=[keep], steps=[{"run": SETTINGS}]))
    assert "s3cret-token" not in out["inputs_asked"][0]["defaults"]
    assert persisted(out)["aiedit/token"] == "s3cret-token"  # left as shown: kept
    out = run(env["tmp"], dict(env["scenario"], extstate=ext, user_inputs=[[*keep[:4], "new", *keep[5:]]],
                               steps=[{"run": SETTINGS}]))
    assert persisted(out)["aiedit/token"] == "new"


def test_failed_import_frees_its_sources(env):
    # low: PCM_sources made before an unreadable take file were leaked
    st, jobs = submit_and_finish(env)
    kick = jobs["Kick 03"]
    (env["spool"] / "jobs" / kick["id"] / "takes" / "eta0.70.wav").write_bytes(b"not a wav")
    out = jobs_session(env, st, [{"defer": 4}])
    assert out["errors"] == [] and registry(out)[kick["id"]]["state"] == "failed"
    assert out["sources"]["leaked"] == 0 and out["sources"]["destroyed"] == 2


def test_random_seeds_differ_between_sessions_on_lua_5_3(env):
    # risk: REAPER 6 runs Lua 5.3, whose math.random starts from the same seed every session
    seeds = []
    for _ in range(2):
        for p in (env["spool"] / "inbox").glob("*.json"):
            p.unlink()
        edit(env, answers=[["x", "0.5", "lora", ""]], lua_version="5.3")
        seeds.append({j["seed"] for j in inbox_jobs(env["spool"]).values()})
    assert seeds[0] != seeds[1]


def test_records_found_when_keys_come_back_upper_cased_but_match_exactly(env):
    # risk: EnumProjExtState may upper-case keys while Get/SetProjExtState match the exact key
    out = edit(env, ext_keys_enum_upper=True)
    st = saved(out)
    for j in inbox_jobs(env["spool"]).values():
        pick_up(env["spool"], j["id"])
        write_status(env["spool"], j, "done")
    out = jobs_session(env, st, [{"defer": 4}], ext_keys_enum_upper=True)
    assert out["errors"] == [] and {r["state"] for r in registry(out).values()} == {"imported"}
    assert len([k for k in out["projects"][0]["projextstate"] if k.startswith("aiedit.jobs/")]) == 3


# ---------------------------------------------------------------------------------------------------------------
# issue 24: the jobs window on ReaImGui (tests/lua/fake_imgui.lua)


def imgui_session(env, state: dict, steps: list, **extra) -> dict:
    """A jobs-window session with ReaImGui installed."""
    return jobs_session(env, state, steps, imgui=True, **extra)


def jobs_table(out: dict) -> list[list[str]]:
    return out["imgui"]["tables"]["jobs"]["rows"]


def row_of(out: dict, label: str) -> list[str]:
    return next(r for r in jobs_table(out) if r[0].startswith(label))


def takes_of(out: dict) -> list[list[str]]:
    return out["imgui"]["tables"]["takes"]["rows"]


def test_imgui_rows_show_prompt_model_strengths_scores_progress_and_worker(env):
    out = edit(env)
    jobs = by_label(inbox_jobs(env["spool"]))
    for j in jobs.values():
        pick_up(env["spool"], j["id"])
    write_status(env["spool"], jobs["Kick 03"], "done", best=1)
    write_status(env["spool"], jobs["Snare"], "running", stage="sampling", progress=0.5, worker="cuda:1@studio-2")
    out = imgui_session(env, saved(out), [{"defer": 3}])
    assert out["errors"] == []
    assert out["imgui"]["tables"]["jobs"]["headers"][:8] == ["Item", "Prompt", "Model", "Mode", "Strengths", "State",
                                                             "Progress", "Worker"]
    kick = row_of(out, "Kick 03")
    assert kick[1] == "knocking on a door, wooden" and kick[2] == "tiny" and kick[3] == "lora"
    assert kick[4] == "0.30 (1.20) · 0.50 (1.29 ★) · 0.70 (1.38)"  # strengths with each take's score, best marked
    assert kick[5].startswith("done: 3 takes added")
    snare = row_of(out, "Snare")
    assert snare[4] == "0.30 · 0.50 · 0.70" and snare[7] == "cuda:1@studio-2"
    assert snare[6].startswith("sampling ") and "left" in snare[6]  # time so far and an estimate
    assert row_of(out, "Door")[6].startswith("waiting")
    assert "Cancel" in snare[8] and "Takes" in kick[8]


def test_imgui_refused_job_shows_the_refusal_within_one_poll_and_an_expired_one_a_clear_line(env):
    out = edit(env)
    jobs = by_label(inbox_jobs(env["spool"]))
    _reject(env["spool"], f"{jobs['Kick 03']['id']}.json", "refused: wrong or missing token")
    pick_up(env["spool"], jobs["Snare"]["id"])
    out = imgui_session(env, saved(out), [{"defer": 1}])
    assert row_of(out, "Kick 03")[5] == "failed: refused by the engine: refused: wrong or missing token"
    out = imgui_session(env, saved(out), [{"defer": 1}, {"advance_clock": 31}, {"defer": 2}])
    assert row_of(out, "Snare")[5].startswith("failed: the engine has no record of this job")
    assert "Retry" in row_of(out, "Snare")[8]


def imported(env, **extra):
    """Saved state after the three jobs were imported (Kick's best = η 0.50), and the jobs."""
    st, jobs = submit_and_finish(env)
    st["extstate"].update(extra)
    out = jobs_session(env, st, [{"defer": 3}])
    assert {r["state"] for r in registry(out).values()} == {"imported"}
    tracks = _as_scenario(out["tracks"])
    return {"extstate": persisted(out), "projextstate": out["projects"][0]["projextstate"], "tracks": tracks}, jobs


def test_imgui_audition_plays_only_that_take_over_its_item_and_restores_solo_selection_and_play(env):
    st, _ = imported(env)
    env["scenario"]["tracks"] = st.pop("tracks")
    env["scenario"]["tracks"][1]["solo"] = 1  # the user soloed FX
    kick_takes = env["scenario"]["tracks"][0]["items"][0]["takes"]
    user = [{"select_items": [G2]}, {"edit_cursor": 20.0}, {"set_play_state": 1}, {"edit_cursor": 5.0}]
    play = [{"imgui_click": "Kick 03##row"}, {"select_items": [G2]}, {"imgui_click": "take3/Play"}, {"defer": 1}]
    out = imgui_session(env, st, [*user, {"defer": 1}, *play])
    assert out["errors"] == []
    kick = items_by_guid(out)[G1]
    assert kick["active_take"] == kick_takes[3]["guid"]  # the η=0.70 take plays
    assert out["play"]["state"] == 1 and out["play"]["pos"] == pytest.approx(2.5)  # from the item's start (2.0)
    assert [t["solo"] for t in out["tracks"]] == [2, 0]  # only its track sounds
    assert any(t.startswith("Playing η=0.70 over its item") for t in out["imgui"]["texts"])
    out = imgui_session(env, st, [*user, {"defer": 1}, *play, {"defer": 5}])  # 2 s item, 0.5 s per cycle
    kick = items_by_guid(out)[G1]
    assert kick["active_take"] == kick_takes[2]["guid"]  # the take that was active before (the best)
    assert [t["solo"] for t in out["tracks"]] == [0, 1]
    assert [it["guid"] for it in items_by_guid(out).values() if it["selected"]] == [G2]
    assert out["play"]["state"] == 1 and out["edit_cursor"] == 5.0  # playing again, the edit cursor back
    assert not any(t.startswith("Playing η=") for t in out["imgui"]["texts"])
    assert out["undo"] == []  # auditioning changes nothing to undo


def test_imgui_a_b_switches_the_active_take_while_it_plays(env):
    st, _ = imported(env)
    env["scenario"]["tracks"] = st.pop("tracks")
    kick_takes = env["scenario"]["tracks"][0]["items"][0]["takes"]
    steps = [{"defer": 1}, {"imgui_click": "Kick 03##row"}, {"imgui_click": "take1/Play"}, {"imgui_key": "A"},
             {"defer": 1}]
    out = imgui_session(env, st, steps)
    assert out["play"]["state"] == 1 and items_by_guid(out)[G1]["active_take"] == kick_takes[0]["guid"]
    assert any("now the original" in t for t in out["imgui"]["texts"])
    out = imgui_session(env, st, [*steps, {"imgui_click": "A/B"}])
    assert out["play"]["state"] == 1 and items_by_guid(out)[G1]["active_take"] == kick_takes[1]["guid"]


def test_imgui_keep_leaves_one_take_as_one_undo_point(env):
    st, _ = imported(env)
    env["scenario"]["tracks"] = st.pop("tracks")
    kick_takes = env["scenario"]["tracks"][0]["items"][0]["takes"]
    out = imgui_session(env, st, [{"defer": 1}, {"imgui_click": "Kick 03##row"}, {"imgui_click": "take1/Keep"},
                                  {"defer": 1}])
    assert out["errors"] == []
    kick = items_by_guid(out)[G1]
    assert [t["guid"] for t in kick["takes"]] == [kick_takes[0]["guid"], kick_takes[1]["guid"]]
    assert kick["active_take"] == kick_takes[1]["guid"]  # the kept η=0.30 take, the original kept too
    assert out["undo"] == ["begin", "end:AI edit: keep η=0.30 for Kick 03"] and out["open_undo"] == 0
    assert len(items_by_guid(out)[G2]["takes"]) == 4  # other jobs untouched
    assert "η=0.30 · kept" in takes_of(out)[0][0]


@pytest.mark.parametrize("target", ["track", "lanes"])
def test_imgui_audition_and_keep_for_results_on_tracks_and_lanes(env, target):
    st, _ = imported(env, **{"aiedit/results": target})
    env["scenario"]["tracks"] = st.pop("tracks")
    steps = [{"defer": 1}, {"imgui_click": "Kick 03##row"}, {"imgui_click": "take2/Play"}]
    out = imgui_session(env, st, steps)
    assert out["errors"] == [] and out["play"]["state"] == 1
    if target == "track":
        res = next(t for t in out["tracks"] if t["name"] == "AI η=0.50 · Drums")
        assert res["mute"] == 0 and res["solo"] == 2 and out["tracks"][0]["solo"] == 0
    else:
        assert out["tracks"][0]["laneplays"] == [0, 0, 1, 0] and out["tracks"][0]["solo"] == 2
    out = imgui_session(env, st, [*steps, {"defer": 6}])
    if target == "track":
        assert all(t["mute"] == 1 and t["solo"] == 0 for t in out["tracks"] if t["name"].startswith("AI η="))
    else:
        assert out["tracks"][0]["laneplays"] == [1, 0, 0, 0]
    out = imgui_session(env, st, [{"defer": 1}, {"imgui_click": "Kick 03##row"}, {"imgui_click": "take2/Keep"},
                                  {"defer": 1}])
    assert out["errors"] == [] and out["undo"] == ["begin", "end:AI edit: keep η=0.50 for Kick 03"]
    kick = items_by_guid(out)[G1]
    assert len(kick["takes"]) == 2 and kick["active_take"] == kick["takes"][1]["guid"]
    assert kick["takes"][1]["ext"]["aiedit_eta"] == "0.5"
    job = kick["takes"][1]["ext"]["aiedit_job"]
    left = [it for tr in out["tracks"] for it in tr["items"] if it["guid"] != G1 and it["takes"]
            and it["takes"][0]["ext"].get("aiedit_job") == job]
    assert left == []  # the job's result items are gone; Snare's stay
    assert any(it["takes"] and it["takes"][0]["ext"].get("aiedit_job") not in (None, job)
               for tr in out["tracks"] for it in tr["items"] if it["guid"] not in (G1, G2, G3))


@pytest.mark.parametrize("saved_settings", [True, False])
def test_imgui_dock_position_and_size_come_back_after_a_restart(env, saved_settings):
    out = edit(env)
    st = saved(out)
    out = imgui_session(env, st, [{"defer": 1}, {"imgui_window": {"x": 310, "y": 220, "w": 720, "h": 480}},
                                  {"imgui_window": {"dock": -2}}, {"defer": 1}],
                        imgui_saved_settings=saved_settings)
    assert out["imgui"]["windows"]["AI edit jobs"] == {"x": 310, "y": 220, "w": 720, "h": 480, "dock": -2}
    out2 = imgui_session(env, saved(out), [{"defer": 2}], imgui_saved_settings=saved_settings)  # REAPER restarted
    assert out2["imgui"]["windows"]["AI edit jobs"] == {"x": 310, "y": 220, "w": 720, "h": 480, "dock": -2}


def test_imgui_space_reaches_play_stop_and_arrows_move_between_rows(env):
    out = edit(env)
    steps = [{"defer": 1}, {"imgui_key": "Space"}]
    out2 = imgui_session(env, saved(out), steps)
    assert out2["play"]["state"] == 1 and out2["commands"] == [40044]
    out2 = imgui_session(env, saved(out), [*steps, {"imgui_key": "Space"}])
    assert out2["play"]["state"] == 0
    out2 = imgui_session(env, saved(out), [{"defer": 1}, {"imgui_key": "DownArrow"}, {"imgui_key": "DownArrow"},
                                           {"imgui_key": "UpArrow"}, {"imgui_key": "DownArrow"}])
    labels = [r[0] for r in jobs_table(out2)]
    sel = [it["guid"] for it in items_by_guid(out2).values() if it["selected"]]
    assert labels[1].startswith("Snare") and sel == [G2]
    assert out2["view_moved_to"] == 6.0  # the arrange view went to the item


def test_imgui_cancel_all_asks_first_retry_and_clear(env):
    out = edit(env)
    jobs = by_label(inbox_jobs(env["spool"]))
    for j in jobs.values():
        pick_up(env["spool"], j["id"])
    write_status(env["spool"], jobs["Kick 03"], "failed", error="out of memory")
    write_status(env["spool"], jobs["Snare"], "running", stage="sampling", progress=0.2)
    write_status(env["spool"], jobs["Door"], "done")
    st = saved(out)
    out = imgui_session(env, st, [{"defer": 1}, {"imgui_click": "Cancel all…"}, {"imgui_click": "Keep them"}])
    assert out["errors"] == [] and not list((env["spool"] / "inbox").glob("cancel-*"))
    out = imgui_session(env, st, [{"defer": 1}, {"imgui_click": "Cancel all…"}, {"defer": 1}])
    assert "Cancel the 1 running AI edit job? Finished takes stay." in out["imgui"]["texts"]
    out = imgui_session(env, st, [{"defer": 1}, {"imgui_click": "Cancel all…"}, {"imgui_click": "Cancel all jobs"}])
    assert [p.name for p in (env["spool"] / "inbox").glob("cancel-*")] == [f"cancel-{jobs['Snare']['id']}.json"]
    # Retry sends the failed job again under a new id, with the same prompt and strengths
    out = imgui_session(env, st, [{"defer": 1}, {"imgui_click": f"{jobs['Kick 03']['id']}/Retry"}, {"defer": 1}])
    again = [j for j in inbox_jobs(env["spool"]).values() if j["label"] == "Kick 03"]
    assert len(again) == 1 and again[0]["id"] != jobs["Kick 03"]["id"]
    assert again[0]["prompt"] == "knocking on a door, wooden" and again[0]["inpaint"] == jobs["Kick 03"]["inpaint"]
    assert jobs["Kick 03"]["id"] not in registry(out) and registry(out)[again[0]["id"]]["state"] == "submitted"
    # Clear finished: the imported Door row and its record go
    out = imgui_session(env, saved(out), [{"defer": 2}, {"imgui_click": "Clear finished"}, {"defer": 1}])
    assert [r[0] for r in jobs_table(out)] == ["Kick 03", "Snare"]
    assert set(registry(out)) == {again[0]["id"], jobs["Snare"]["id"]}


def test_without_imgui_the_window_says_once_how_to_get_it(env):
    out = edit(env, steps=[{"run": EDIT}, {"defer": 1}])  # the edit opens the jobs window
    assert out["browsed"] == ["ReaImGui"]
    assert any("install ReaImGui" in t for t in out["gfx_text"])
    out = jobs_session(env, saved(out), [{"defer": 1}])
    assert out["browsed"] == [] and not any("install ReaImGui" in t for t in out["gfx_text"])


def test_opt_in_opens_the_jobs_window_when_reaper_starts(env):
    # issue 24: an opt-in (AI edit settings) that adds a marked block to Scripts/__startup.lua, and takes it out again
    startup = env["tmp"] / "reaper-resource" / "Scripts" / "__startup.lua"
    startup.parent.mkdir(parents=True)
    startup.write_text("-- the user's own startup line\n", encoding="utf-8")
    base = ["", "aiedit serve", "yes", "", "", "takes"]
    out = run(env["tmp"], dict(env["scenario"], user_inputs=[[*base, "yes"]], steps=[{"run": SETTINGS}]))
    assert out["errors"] == [] and out["inputs_asked"][0]["labels"][6] == "Open jobs window at start (yes/no)"
    text = startup.read_text(encoding="utf-8")
    assert text.startswith("-- the user's own startup line\n-- >>> aiedit: open the AI edit jobs window")
    assert str(SCRIPTS / JOBS) in text or JOBS in text
    # REAPER starts: it runs __startup.lua, which opens the jobs window
    out = run(env["tmp"], dict(env["scenario"], steps=[{"run_path": str(startup)}, {"defer": 1}]))
    assert out["errors"] == [] and out["gfx_open"] and list(out["toggles"].values()) == [1]
    out = run(env["tmp"], dict(env["scenario"], user_inputs=[[*base, "no"]], steps=[{"run": SETTINGS}]))
    assert out["inputs_asked"][0]["values"][6] == "yes"  # the dialog shows that it is on
    assert startup.read_text(encoding="utf-8") == "-- the user's own startup line\n"


# ---------------------------------------------------------------------------------------------------------------
# issues 23 and 24: models from daemon.json, the song's tempo, the dialog on ReaImGui

MODELS = [{"name": "tiny-ace", "kind": "music", "modes": ["lora", "repaint", "cover", "flowedit"],
           "takes": ["lyrics", "bpm", "key", "time_signature", "language"], "loaded": True},
          {"name": "tiny", "kind": "sound effects", "modes": ["lora", "full", "sdedit", "zeta"], "takes": [],
           "loaded": False}]


def test_jobs_carry_the_projects_tempo_and_time_signature_at_each_item(env):
    tempo = [{"time": 0.0, "bpm": 120, "num": 4, "denom": 4}, {"time": 5.0, "bpm": 96.5, "num": 6, "denom": 8},
             {"time": 9.0, "bpm": 400, "num": 7, "denom": 8}]
    edit(env, tempo_map=tempo)
    jobs = by_label(inbox_jobs(env["spool"]))
    assert (jobs["Kick 03"]["bpm"], jobs["Kick 03"]["time_signature"]) == (120, "4/4")  # the item starts at 2 s
    assert (jobs["Snare"]["bpm"], jobs["Snare"]["time_signature"]) == (96.5, "6/8")  # at 6 s
    assert "bpm" not in jobs["Door"] and jobs["Door"]["time_signature"] == "7/8"  # 400 bpm is outside [20, 300]
    assert all("model" not in j for j in jobs.values())  # daemon.json lists no models: the daemon's default runs


def test_dialog_offers_the_daemons_models_sends_lyrics_and_remembers_the_model_per_project(env):
    heartbeat(env["spool"], modes=["lora", "repaint", "cover", "flowedit"], models=MODELS)
    out = edit(env, answers=[["a choir", "0.4", "cover", "1", "tiny-ace", "la la la"]])
    asked = out["inputs_asked"][0]
    assert asked["labels"][4] == "Model (tiny-ace (music) / tiny (sound effects))" and asked["labels"][5].startswith(
        "Lyrics")
    assert asked["labels"][2] == "Mode (lora / repaint / cover / flowedit)"
    jobs = list(inbox_jobs(env["spool"]).values())
    assert {(j["model"], j["mode"], j["lyrics"]) for j in jobs} == {("tiny-ace", "cover", "la la la")}
    st = saved(out)
    assert st["projextstate"]["aiedit/last_model"] == "tiny-ace"
    assert json.loads(st["projextstate"]["aiedit/prompts"]) == ["a choir"]
    for p in (env["spool"] / "inbox").glob("*.json"):
        p.unlink()
    # the next dialog starts from the project's last model; a model without lyrics gets none
    out = edit(env, answers=[["a door", "0.4", "zeta", "1", "tiny", "ignored"]], **st)
    assert out["inputs_asked"][0]["values"][4] == "tiny-ace" and out["inputs_asked"][0]["values"][0] == "a choir"
    jobs = list(inbox_jobs(env["spool"]).values())
    assert {(j["model"], j["mode"], "lyrics" in j) for j in jobs} == {("tiny", "zeta", False)}
    out = edit(env, answers=[["x", "0.4", "full", "1", "tiny-ace", ""], False], **st)  # full: not tiny-ace's
    assert out["inputs_asked"][1]["labels"][2].startswith("! Mode: one of lora / repaint / cover / flowedit")


def test_imgui_dialog_in_plain_words(env):
    heartbeat(env["spool"], modes=["lora", "repaint", "cover", "flowedit"], models=MODELS)
    base = [{"run": EDIT}, {"defer": 1}]
    out = edit(env, answers=[], steps=[*base], imgui=True)
    texts = out["imgui"]["texts"]
    assert out["errors"] == [] and out["inputs_asked"] == []  # no GetUserInputs with ReaImGui
    assert "Only 0:03.000 – 0:03.500 (the time selection) is regenerated in 1 of 3 items; the rest comes back " \
        "unchanged." in texts
    assert "Preview: quick edit, no learning (seconds)" in texts and "Careful edit: learns this sound first " \
        "(minutes)" in texts
    assert "Tempo from the project at each item (first: 120 bpm, 4/4)" in texts
    combo = next(w for w in out["imgui"]["widgets"] if w.get("label") == "Model")
    assert combo["value"] == "tiny-ace (music)"
    steps = [*base, {"imgui_type": {"label": "Prompt", "value": "a choir, softly"}},
             {"imgui_click": "Three to compare"}, {"imgui_click": "cover"},
             {"imgui_type": {"label": "Lyrics", "value": "la la\nla"}}, {"imgui_type": {"label": "Key",
                                                                                       "value": "F# minor"}},
             {"imgui_click": "Edit 3 items"}, {"defer": 1}]
    out = edit(env, answers=[], steps=steps, imgui=True)
    assert out["errors"] == []
    jobs = list(inbox_jobs(env["spool"]).values())
    assert len(jobs) == 3
    assert {(j["prompt"], tuple(j["etas"]), j["mode"], j["model"], j["lyrics"], j["key"]) for j in jobs} == {
        ("a choir, softly", (0.3, 0.5, 0.7), "cover", "tiny-ace", "la la\nla", "F# minor")}
    st = saved(out)
    assert json.loads(st["projextstate"]["aiedit/prompts"]) == ["a choir, softly"]
    assert persisted(out)["aiedit/last_mode"] == "cover"
    for p in (env["spool"] / "inbox").glob("*.json"):
        p.unlink()
    # the other model: its modes only, no lyrics field; a wrong value is said in the dialog, which stays open
    steps = [*base, {"imgui_type": {"label": "Model", "value": "tiny (sound effects)"}},
             {"imgui_type": {"label": "Strengths", "value": "2,5"}}, {"imgui_click": "Edit 3 items"}, {"defer": 1}]
    out = edit(env, answers=[], steps=steps, imgui=True, **st)
    assert out["errors"] == [] and inbox_jobs(env["spool"]) == {}
    texts = out["imgui"]["texts"]
    assert "Strengths: η must be in [0, 1.5]: 2.5" in texts and "Lyrics" not in [
        w.get("label") for w in out["imgui"]["widgets"]]
    assert "Earlier prompts" in [w.get("label") for w in out["imgui"]["widgets"]]
    out = edit(env, answers=[], steps=[*base, {"imgui_click": "Cancel"}, {"defer": 1}], imgui=True)
    assert inbox_jobs(env["spool"]) == {} and out["pending_defer"] == 0


def test_imgui_takes_show_their_spectrograms_beside_scores(env):
    st, _ = imported(env)
    env["scenario"]["tracks"] = st.pop("tracks")
    out = imgui_session(env, st, [{"defer": 1}, {"imgui_click": "Kick 03##row"}, {"defer": 1}])
    assert out["errors"] == []
    rows = takes_of(out)
    assert [r[0] for r in rows] == ["η=0.30", "η=0.50 ★ best", "η=0.70"]
    assert rows[1][1] == "text 0.40 · audio 0.89 · sum 1.29"  # each take's CLAP scores
    assert [r[2] for r in rows] == [f"[image eta{e:.2f}.png]" for e in (0.3, 0.5, 0.7)]
    assert out["imgui"]["images_loaded"] == 4  # the input's picture and one per take, each loaded once
    assert any(w["kind"] == "image" and w["file"].endswith("input.png") for w in out["imgui"]["widgets"])


def test_batch_offers_the_models_and_sends_the_tempo_at_each_item(env):
    heartbeat(env["spool"], modes=["lora", "repaint", "cover", "flowedit"], models=MODELS)
    tempo = [{"time": 0.0, "bpm": 120, "num": 4, "denom": 4}, {"time": 8.0, "bpm": 90, "num": 3, "denom": 4}]
    sc = dict(env["scenario"], tempo_map=tempo, steps=[{"run": BATCH}],
              user_inputs=[["metal", "0.5", "zeta", "1", "project", "no", "tiny"]])
    out = run(env["tmp"], sc)
    assert out["errors"] == [] and out["inputs_asked"][0]["labels"][6].startswith("Model (tiny-ace (music)")
    jobs = by_label(inbox_jobs(env["spool"]))
    assert {j["model"] for j in jobs.values()} == {"tiny"} and {j["mode"] for j in jobs.values()} == {"zeta"}
    assert (jobs["Snare"]["bpm"], jobs["Door"]["bpm"], jobs["Door"]["time_signature"]) == (120, 90, "3/4")
    assert saved(out)["projextstate"]["aiedit/last_model"] == "tiny"


# ---------------------------------------------------------------------------------------------------------------
# issue 25: each model's default strengths per mode (daemon.json "strengths") fill the dialogs


def flow_daemon(env) -> None:
    """daemon.json as a tiny test daemon writes it (bridge.jobs.models: its real "strengths"), tiny-sa3 first."""
    from bridge.jobs.models import ModelMenu

    info = {m["name"]: m for m in ModelMenu("tiny-sa3").info(loaded={"tiny-sa3"})}
    assert info["tiny-sa3"]["strengths"]["flowedit"] == [0.75, 0.85, 0.95]
    heartbeat(env["spool"], model="tiny-sa3", modes=info["tiny-sa3"]["modes"],
              models=[info["tiny-sa3"], info["tiny"]])


def sent(env, out: dict | None = None) -> set:
    """(model, mode, etas) of the queued jobs, and the inbox emptied for the next session."""
    assert out is None or out["errors"] == []
    jobs = list(inbox_jobs(env["spool"]).values())
    for p in (env["spool"] / "inbox").glob("*.json"):
        p.unlink()
    return {(j.get("model"), j["mode"], tuple(j["etas"])) for j in jobs}


def test_imgui_dialog_fills_each_models_strengths_per_mode_and_remembers_them_per_model_and_mode(env):
    flow_daemon(env)
    base = [{"run": EDIT}, {"defer": 1}]
    edit_ = [{"imgui_type": {"label": "Prompt", "value": "a door"}}, {"imgui_click": "Edit 3 items"}, {"defer": 1}]
    # SA3 + FlowEdit: its own 0.75 / 0.85 / 0.95 (the general numbers are near-copies there), and its presets
    out = edit(env, answers=[], steps=[*base, {"imgui_click": "flowedit"}, {"defer": 1}], imgui=True)
    assert out["errors"] == [] and "Defaults for tiny-sa3, flowedit: 0.75, 0.85, 0.95" in out["imgui"]["texts"]
    assert next(w for w in out["imgui"]["widgets"] if w.get("label") == "Strengths")["value"] == "0.75, 0.85, 0.95"
    out = edit(env, answers=[], steps=[*base, {"imgui_click": "flowedit"}, *edit_], imgui=True)
    assert sent(env, out) == {("tiny-sa3", "flowedit", (0.75, 0.85, 0.95))}
    for preset, etas in (("A touch", (0.75,)), ("Clearly", (0.85,)), ("A lot", (0.95,))):
        out = edit(env, answers=[], steps=[*base, {"imgui_click": "flowedit"}, {"imgui_click": preset}, *edit_],
                   imgui=True)
        assert sent(env, out) == {("tiny-sa3", "flowedit", etas)}, preset
    # the user's own numbers for SA3 + FlowEdit; the sound model's LoRA gets the general ones, not these
    out = edit(env, answers=[], imgui=True, steps=[*base, {"imgui_click": "flowedit"}, {"imgui_type": {
        "label": "Strengths", "value": "0.9"}}, *edit_])
    assert sent(env, out) == {("tiny-sa3", "flowedit", (0.9,))}
    st = saved(out)
    out = edit(env, answers=[], imgui=True, **st, steps=[*base, {"imgui_type": {
        "label": "Model", "value": "tiny (general)"}}, *edit_])
    assert sent(env, out) == {("tiny", "lora", (0.25, 0.5, 0.75))}  # flowedit is not tiny's: its first mode, general
    # and a number chosen for tiny + LoRA stays there: back on SA3, FlowEdit is the user's 0.9, LoRA the general
    st = saved(out)
    out = edit(env, answers=[], imgui=True, **st, steps=[*base, {"imgui_type": {"label": "Strengths",
                                                                                "value": "1.2"}}, *edit_])
    assert sent(env, out) == {("tiny", "lora", (1.2,))}
    st = saved(out)
    out = edit(env, answers=[], imgui=True, **st, steps=[*base, {"imgui_type": {"label": "Model", "value": "tiny-sa3 "
                                                                          "(general)"}}, *edit_])
    assert sent(env, out) == {("tiny-sa3", "lora", (0.25, 0.5, 0.75))}
    out = edit(env, answers=[], imgui=True, **st, steps=[*base, {"imgui_type": {"label": "Model", "value": "tiny-sa3 "
                                                                          "(general)"}}, {"imgui_click": "flowedit"},
                                                   *edit_])
    assert sent(env, out) == {("tiny-sa3", "flowedit", (0.9,))}


def test_plain_dialog_fills_the_models_strengths_and_refills_them_when_the_model_or_mode_changes(env):
    flow_daemon(env)
    ext = {**env["scenario"]["extstate"], "aiedit/last_mode": "flowedit", "aiedit/last_etas": "0.3"}
    out = edit(env, answers=[False], extstate=ext)
    assert out["inputs_asked"][0]["values"][1:5] == ["0.75, 0.85, 0.95", "flowedit", "0", "tiny-sa3"]
    # the mode changed, the strengths left as shown: the dialog comes back with LoRA's, saying so
    out = edit(env, extstate=ext, answers=[["a door", "0.75, 0.85, 0.95", "lora", "1", "tiny-sa3"],
                                           ["a door", "0.25, 0.5, 0.75", "lora", "1", "tiny-sa3"]])
    assert out["errors"] == [] and out["inputs_asked"][1]["values"][1] == "0.25, 0.5, 0.75"
    assert out["inputs_asked"][1]["labels"][1].startswith("! η values: 0.25; 0.5; 0.75 for tiny-sa3 lora")
    assert sent(env, out) == {("tiny-sa3", "lora", (0.25, 0.5, 0.75))}
    # numbers the user typed are kept whatever the model and mode, and remembered for that model and mode only
    out = edit(env, extstate=ext, answers=[["a door", "0.9", "flowedit", "1", "tiny-sa3"]])
    assert sent(env, out) == {("tiny-sa3", "flowedit", (0.9,))}
    st = saved(out)
    out = edit(env, answers=[["a door", "0.9", "zeta", "1", "tiny"], ["a door", "0.25, 0.5, 0.75", "zeta", "1",
                                                                       "tiny"]], **st)
    assert out["inputs_asked"][0]["values"][1] == "0.9"  # tiny-sa3 + flowedit, remembered
    assert out["inputs_asked"][1]["values"][1] == "0.25, 0.5, 0.75"  # not carried into tiny's zeta
    assert sent(env, out) == {("tiny", "zeta", (0.25, 0.5, 0.75))}


def test_batch_fills_the_models_strengths_per_mode(env):
    flow_daemon(env)
    ext = {**env["scenario"]["extstate"], "aiedit/last_mode": "sdedit", "aiedit/last_etas": "0.3"}
    sc = dict(env["scenario"], extstate=ext, steps=[{"run": BATCH}],
              user_inputs=[["metal", "0.4, 0.55, 0.7", "flowedit", "1", "selected items", "no", "tiny-sa3"],
                           ["metal", "0.75, 0.85, 0.95", "flowedit", "1", "selected items", "no", "tiny-sa3"]])
    out = run(env["tmp"], sc)
    assert out["errors"] == [] and out["inputs_asked"][0]["values"][1] == "0.4, 0.55, 0.7"  # SA3's SDEdit
    assert out["inputs_asked"][1]["values"][1] == "0.75, 0.85, 0.95"  # refilled for FlowEdit
    assert sent(env, out) == {("tiny-sa3", "flowedit", (0.75, 0.85, 0.95))}


def test_an_older_daemon_without_strengths_keeps_the_general_presets_and_the_remembered_numbers(env):
    heartbeat(env["spool"], modes=["lora", "repaint", "cover", "flowedit"], models=MODELS)  # no "strengths"
    ext = {**env["scenario"]["extstate"], "aiedit/last_etas": "0.35", "aiedit/last_mode": "flowedit"}
    out = edit(env, answers=[False], extstate=ext)
    assert out["inputs_asked"][0]["values"][1] == "0.35"
    out = edit(env, extstate=ext, answers=[["a door", "0.35", "lora", "1", "tiny-ace", ""]])
    assert len(out["inputs_asked"]) == 1 and sent(env) == {("tiny-ace", "lora", (0.35,))}  # asked once
    base = [{"run": EDIT}, {"defer": 1}, {"imgui_type": {"label": "Prompt", "value": "a door"}}]
    out = edit(env, answers=[], imgui=True, extstate=ext, steps=[*base, {"imgui_click": "lora"},
                                                                 {"imgui_click": "A lot"},
                                                                 {"imgui_click": "Edit 3 items"}, {"defer": 1}])
    assert sent(env, out) == {("tiny-ace", "lora", (0.8,))}
    assert not any(t.startswith("Defaults for") for t in out["imgui"]["texts"])
    out = edit(env, answers=[], imgui=True, extstate=ext, steps=[*base, {"imgui_click": "cover"},
                                                           {"imgui_click": "Edit 3 items"}, {"defer": 1}])
    assert sent(env, out) == {("tiny-ace", "cover", (0.35,))}  # a change of mode keeps the numbers, as before


# ---------------------------------------------------------------------------------------------------------------
# paths on every platform (issue 24's "default spool from USERPROFILE" risk, issue 27)


def windows_default_spool(env, userprofile_ansi: bytes, resource: str, **getenv) -> str:
    """The spool the scripts use on a Windows REAPER with no spool setting: read from the engine message (no
    daemon answers there). ``userprofile_ansi`` is what REAPER's os.getenv returns: the ANSI code page bytes."""
    sc = dict(env["scenario"], windows=True, resource_path=resource, extstate={},
              getenv={"USERPROFILE": {"hex": userprofile_ansi.hex()}, "AIEDIT_SPOOL": False, **getenv})
    out = edit(env, answers=[], mb_answers=[2], **{k: v for k, v in sc.items() if k != "tracks"})
    msg = out["messages"][0]["msg"]
    return msg.split("no fresh heartbeat in\n", 1)[1].split("\\daemon.json", 1)[0]


@pytest.mark.parametrize(("name", "ansi"), [
    ("José Müller", "José Müller".encode("cp1252")),  # in the code page: other bytes than UTF-8's
    ("王小明", b"???"),  # not in a Western code page: '?' for each character
    ("Ana Lúcia", "Ana Lúcia".encode("cp1252")),
])
def test_windows_default_spool_is_the_daemons_whatever_the_user_name(env, name, ansi):
    """The daemon's default is Path.home()/.aiedit/spool, and Python reads USERPROFILE in full Unicode; REAPER's Lua
    gets it in the ANSI code page. The scripts take the exact profile folder from REAPER's UTF-8 resource path."""
    import ntpath

    profile = f"C:\\Users\\{name}"
    got = windows_default_spool(env, b"C:\\Users\\" + ansi, f"{profile}\\AppData\\Roaming\\REAPER")
    assert got == ntpath.join(profile, ".aiedit", "spool")


def test_windows_spool_when_the_profile_cannot_be_known_is_under_reapers_own_folder(env):
    # a portable REAPER (resource path not under the profile) and a name the code page lacks: no exact profile, so
    # the spool goes under REAPER's resource path and the engine command REAPER shows passes it as --spool
    resource = "D:\\Portable REAPER 音"
    got = windows_default_spool(env, b"C:\\Users\\???", resource)
    assert got == resource + "\\aiedit\\spool"
    # an ASCII name is exact whatever the resource path
    assert windows_default_spool(env, b"C:\\Users\\jo", resource) == "C:\\Users\\jo\\.aiedit\\spool"
    # a profile whose ASCII letters disagree with the resource path's is not taken from it
    got = windows_default_spool(env, b"C:\\Users\\Jos\xe9", "C:\\Users\\Ana Lúcia\\AppData\\Roaming\\REAPER")
    assert got == "C:\\Users\\Ana Lúcia\\AppData\\Roaming\\REAPER\\aiedit\\spool"


def quote_in_lua(arg: str, windows: bool) -> str:
    scripts = str(ROOT / "reaper_scripts")
    code = (f"package.path = {json.dumps(scripts + '/?.lua;' + scripts + '/?/init.lua;')} .. package.path; "
            f"reaper = {{}}; local M = require('aiedit'); M.is_windows = {str(windows).lower()}; "
            "io.write(M.quote_arg(arg[1]))")
    proc = subprocess.run([lua(), "-e", code, "-", arg], capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode("utf-8")


def windows_argv(line: str) -> list[str]:
    """The C runtime's split of a command line (CommandLineToArgvW's documented rules), for the test's check."""
    out, cur, i, quoted, have = [], [], 0, False, False
    while i < len(line):
        c = line[i]
        if c == "\\":
            n = 0
            while i < len(line) and line[i] == "\\":
                n, i = n + 1, i + 1
            if i < len(line) and line[i] == '"':
                cur.append("\\" * (n // 2))
                if n % 2:
                    cur.append('"')
                    i += 1
                continue
            cur.append("\\" * n)
            continue
        if c == '"':
            quoted, have = not quoted, True
        elif c in " \t" and not quoted:
            if cur or have:
                out.append("".join(cur))
            cur, have = [], False
        else:
            cur.append(c)
        i += 1
    if cur or have:
        out.append("".join(cur))
    return out


@pytest.mark.parametrize("path", ["C:\\Users\\José Müller\\aiedit env\\Scripts\\aiedit.exe",
                                  "D:\\Spool 音\\", 'C:\\odd "quoted" dir\\x', "C:\\100% ^done & more\\a b"])
def test_engine_start_arguments_survive_windows_quoting(path):
    line = "aiedit.exe serve --spool " + quote_in_lua(path, windows=True)
    assert windows_argv(line) == ["aiedit.exe", "serve", "--spool", path]


@pytest.mark.parametrize("path", ["/Users/José Müller/Library/aiedit spool", "/tmp/a $HOME `id` \"q\" \\b/音"])
def test_engine_start_arguments_survive_posix_shell_quoting(path):
    proc = subprocess.run(["/bin/sh", "-c", "printf %s " + quote_in_lua(path, windows=False)], capture_output=True,
                          timeout=30)
    assert proc.stdout.decode("utf-8") == path


def test_a_bare_engine_path_with_spaces_is_quoted_and_served(env):
    exe = env["tmp"] / "Program Files" / "aiedit env" / "bin" / "aiedit"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    heartbeat(env["spool"], age=30)
    for setting, want in ((str(exe), f'"{exe}" serve'), (f"{exe} serve --port 9051", f'"{exe}" serve --port 9051'),
                          (f'"{exe}" serve', f'"{exe}" serve')):
        ext = {"aiedit/spool": str(env["spool"]), "aiedit/engine_cmd": setting}
        out = edit(env, mb_answers=[6], extstate=ext)
        assert out["exec"] == [{"cmd": f'{want} --spool "{env["spool"]}"', "timeout": -2}], setting
