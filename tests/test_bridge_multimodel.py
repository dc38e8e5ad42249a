"""Several models behind one real daemon (``aiedit serve --model tiny --max-models 1``), real UDP on 127.0.0.1:
jobs naming ``tiny``, ``tiny-sa3`` and ``tiny-ace`` sent together all finish on the model they name, the worker
evicting and reloading as it goes; a model not on disk is refused naming those that are; daemon.json lists them;
musical fields a model ignores come back as notes."""

from __future__ import annotations

import time

from bridge_helpers import Daemon, Listener, job_json, make_wav

from engine.params import MUSIC_FIELDS, MUSIC_FLOW_MODES

QUICK = {"embed": 2, "tune": 2, "sample": 3}


def _log(d: Daemon) -> str:
    try:
        return (d.spool / "aiedit.log").read_text(errors="replace")
    except OSError:
        return ""


def test_one_daemon_runs_jobs_naming_three_models_evicting_and_reloading_with_max_models_1(tmp_path):
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    with Daemon(tmp_path / "spool", "--max-models", "1") as d, Listener(d.port) as osc:
        info = d.daemon_json()
        models = {m["name"]: m for m in info["models"]}
        assert info["models"][0]["name"] == "tiny" and info["model"] == "tiny"
        assert {"tiny", "tiny-sa3", "tiny-ace"} <= set(models)
        assert models["tiny-ace"]["kind"] == "music" and models["tiny-ace"]["modes"] == list(MUSIC_FLOW_MODES)
        assert models["tiny-ace"]["takes"] == list(MUSIC_FIELDS) and models["tiny-sa3"]["takes"] == []
        assert not any(m["loaded"] for m in info["models"])

        # a model that is not on disk: refused at once, in one line naming the models that are
        osc.send("/aiedit/job", job_json("nope", src, model="sa3-medium"))
        msg = osc.wait("/aiedit/error", "nope", timeout=10)[1]
        assert "'sa3-medium' is not one of this engine's models: tiny," in msg and "tiny-ace" in msg
        assert "\n" not in msg and d.status("nope")["state"] == "failed"

        # sent together; "tiny" again last: with one model per worker, each job loads its own, evicting the last
        order = [("m1", "tiny"), ("m2", "tiny-sa3"), ("m3", "tiny-ace"), ("m4", None)]
        music = {"bpm": 96, "time_signature": "6/8", "lyrics": "la la la"}
        for jid, model in order:
            fields = {"model": model} if model else {}
            osc.send("/aiedit/job", job_json(jid, src, steps=dict(QUICK), etas=[0.5], **fields, **music))
        for jid, _ in order:
            address, args = osc.wait_end(jid, timeout=180)
            assert address == "/aiedit/done", (jid, args)
        for jid, model in order:
            st = d.status(jid)
            ran = model or "tiny"
            assert st["model"] == ran, (jid, st["model"])
            stages = [args[1] for addr, args in osc.events_for(jid) if addr == "/aiedit/progress"]
            assert stages[0] == "loading", (jid, stages)  # each one loaded its model
            assert st["takes"] and st["sample_rate"] == 44_100
            if ran == "tiny-ace":  # takes the musical context: nothing ignored
                assert not any("ignored" in n for n in st["notes"]), st["notes"]
            else:
                assert {f"{f} ignored: {ran} does not take musical context" for f in music} <= set(st["notes"])
        log = _log(d)
        for name in ("tiny", "tiny-sa3", "tiny-ace"):
            assert f"evicting model {name} " in log, log[-3000:]
        assert log.count("loading model tiny on") == 2  # loaded, evicted, loaded again

        deadline = time.monotonic() + 10  # daemon.json is rewritten every 2 s
        while time.monotonic() < deadline:
            loaded = {m["name"] for m in d.daemon_json()["models"] if m["loaded"]}
            if loaded == {"tiny"}:
                break
            time.sleep(0.2)
        assert loaded == {"tiny"} and d.daemon_json()["workers"][0]["models"] == ["tiny"]
        # a loaded model's own mode list replaced the one known from its name: its strengths still cover each mode
        after = {m["name"]: m for m in d.daemon_json()["models"]}
        assert after["tiny-sa3"]["strengths"]["flowedit"] == [0.75, 0.85, 0.95]
        assert set(after["tiny-ace"]["strengths"]) == set(after["tiny-ace"]["modes"])


def test_daemon_json_gives_each_models_default_strengths_per_mode(tmp_path):
    """A protocol job always names its strengths, so a client's dialog needs the model's defaults (issue 25): the
    general 0.25 / 0.5 / 0.75 are near-copies in FlowEdit and SDEdit on a flow model."""
    with Daemon(tmp_path / "spool") as d:
        models = {m["name"]: m for m in d.daemon_json()["models"]}
    sa3, tiny = models["tiny-sa3"]["strengths"], models["tiny"]["strengths"]
    assert sa3["flowedit"] == [0.75, 0.85, 0.95] and sa3["sdedit"] == [0.4, 0.55, 0.7]
    assert sa3["lora"] == sa3["full"] == [0.25, 0.5, 0.75]  # η, not a noise level: the general ones
    assert tiny["lora"] == tiny["sdedit"] == tiny["zeta"] == [0.25, 0.5, 0.75]  # a sound model: general
    for m in models.values():
        assert list(m["strengths"]) == m["modes"], m["name"]  # one entry per mode it runs, in its order


def test_a_re_take_on_a_named_model_finds_its_stage_cache(tmp_path):
    """Two loaded models; a re-take (other η) on the second, after a job on the first, runs stage 3 only."""
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    with Daemon(tmp_path / "spool", "--max-models", "2") as d, Listener(d.port) as osc:
        for jid, model, etas in (("r1", "tiny-sa3", [0.4]), ("r2", "tiny", [0.4]), ("r3", "tiny-sa3", [0.8])):
            osc.send("/aiedit/job", job_json(jid, src, model=model, etas=etas, steps=dict(QUICK)))
            address, args = osc.wait_end(jid, timeout=180)
            assert address == "/aiedit/done", args
        first, retake = d.status("r1"), d.status("r3")
        assert first["network_calls"].get("finetune", 0) > 0
        assert "finetune" not in retake["network_calls"] and "embedding" not in retake["network_calls"]
        assert retake["model"] == "tiny-sa3" and "evicting" not in _log(d)
