"""Several models per daemon, without a daemon process: the model list a daemon offers and what a job may name
(bridge/jobs/models.py), the musical fields of a job (bridge/jobs/protocol.py), a worker's LRU of loaded models
(bridge/workers/loaded.py) and the pool's choice of worker by model (bridge/workers/pool.py). No torch."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.jobs.models import ModelMenu
from bridge.jobs.protocol import PathMap, ProtocolError, key_model, parse_job
from bridge.jobs.service import Service
from bridge.jobs.spool import Spool
from bridge.workers.loaded import LoadedModels, default_max_models
from bridge.workers.pool import Pool
from engine.params import MUSIC_FIELDS, MUSIC_FLOW_MODES


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    p = tmp_path / "a.wav"
    sf.write(p, np.zeros(16000), 16000)
    return p


def body(jid: str, wav: Path, **fields) -> dict:
    return {"version": 1, "id": jid, "source": {"path": str(wav)}, "prompt": "x", "etas": [0.5], **fields}


def model_folder(root: Path, name: str) -> Path:
    """A folder the inventory takes for an AudioLDM model (its layout; no weights are read)."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "AudioLDMPipeline"}))
    return folder


def hub_snapshot(cache: Path, repo: str) -> Path:
    """The hub cache's layout for ``repo`` with a model_index.json (what `models list` calls present)."""
    base = cache / ("models--" + repo.replace("/", "--"))
    snap = base / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (snap / "model_index.json").write_text(json.dumps({"_class_name": "AudioLDMPipeline"}))
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text("0123abcd")
    return snap


# -- the list a daemon offers --------------------------------------------------------------------------------------


def test_a_tiny_daemon_lists_the_built_in_models_with_their_modes_kind_and_takes_default_first():
    menu = ModelMenu("tiny")
    info = menu.info(loaded={"tiny-ace"})
    names = [m["name"] for m in info]
    assert names[0] == "tiny" and {"tiny-sa3", "tiny-ace", "toy", "toy-flow"} <= set(names)
    by = {m["name"]: m for m in info}
    assert by["tiny-ace"] == {"name": "tiny-ace", "kind": "music", "modes": list(MUSIC_FLOW_MODES),
                              "takes": list(MUSIC_FIELDS), "loaded": True,
                              "strengths": {m: [0.25, 0.5, 0.75] for m in MUSIC_FLOW_MODES}}
    assert by["tiny"]["modes"] == ["lora", "full", "sdedit", "zeta"] and by["tiny"]["takes"] == []
    assert by["tiny-sa3"]["modes"] == ["lora", "full", "sdedit", "flowedit"] and not by["tiny"]["loaded"]
    assert by["toy"]["kind"] == "sound effects"


def test_a_real_default_hides_the_random_weight_models_and_a_job_naming_one_is_refused_naming_those_there(wav):
    menu = ModelMenu("toy")
    names = [m.name for m in menu.models]
    assert names[0] == "toy" and not {"tiny", "tiny-sa3", "tiny-ace"} & set(names)
    job = parse_job(body("j", wav, model="tiny-ace"))
    with pytest.raises(ProtocolError) as e:
        menu.check(job)
    msg = str(e.value)
    assert "'tiny-ace' is not one of this engine's models" in msg and "toy, toy-flow" in msg and "\n" not in msg
    assert menu.check(parse_job(body("k", wav))).model == "toy"  # no model: the default, named


def test_auto_is_resolved_at_start_and_a_job_naming_auto_runs_on_it(wav, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))  # no real model here: auto → toy
    menu = ModelMenu("auto")
    assert menu.label == "toy" and menu.spec_of("toy") == "toy"
    assert menu.check(parse_job(body("a", wav, model="auto"))).model == "toy"


def test_a_job_may_name_a_configured_folder_by_path_and_an_alias_by_hub_id_but_no_other_folder(wav, tmp_path,
                                                                                              monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    hub_snapshot(cache, "cvssp/audioldm-s-full-v2")
    dirs = tmp_path / "models"
    mine = model_folder(dirs, "my-foley")
    elsewhere = model_folder(tmp_path / "elsewhere", "planted")  # a model folder, but not a configured one
    monkeypatch.setenv("AIEDIT_MODEL_DIRS", str(dirs))
    menu = ModelMenu("toy")
    names = [m.name for m in menu.models]
    assert {"audioldm", "my-foley"} <= set(names)
    assert menu.spec_of("my-foley") == str(mine) and menu.family_of("my-foley") == "audioldm"
    for asked in ("my-foley", str(mine), f"{mine}/", f"{dirs}/./x/../my-foley"):
        assert menu.check(parse_job(body("f", wav, model=asked))).model == "my-foley", asked
    assert menu.check(parse_job(body("h", wav, model="cvssp/audioldm-s-full-v2"))).model == "audioldm"
    # a client's path, mapped as its source paths are
    assert menu.check(parse_job(body("m", wav, model="C:\\Models\\my-foley")),
                      PathMap([("C:\\Models", str(dirs))])).model == "my-foley"
    for asked in (str(elsewhere), "/etc", str(dirs), "cvssp/audioldm2"):
        with pytest.raises(ProtocolError, match="is not one of this engine's models"):
            menu.check(parse_job(body("x", wav, model=asked)))


def test_the_mode_check_is_the_named_models(wav):
    menu = ModelMenu("tiny")
    repaint = body("r", wav, mode="repaint", inpaint={"start": 0.1, "end": 0.5})
    assert menu.check(parse_job({**repaint, "model": "tiny-ace"})).model == "tiny-ace"
    with pytest.raises(ProtocolError, match="model 'tiny' cannot run mode 'repaint': it runs lora, full, sdedit, zeta"):
        menu.check(parse_job(repaint))
    with pytest.raises(ProtocolError, match="model 'tiny-sa3' cannot run mode 'cover'"):
        menu.check(parse_job(body("c", wav, mode="cover", model="tiny-sa3")))


def test_a_queued_job_whose_model_is_gone_at_restart_fails_and_the_others_resume(tmp_path, wav, monkeypatch):
    dirs = tmp_path / "models"
    folder = model_folder(dirs, "gone-soon")
    monkeypatch.setenv("AIEDIT_MODEL_DIRS", str(dirs))
    spool = Spool(tmp_path / "spool")
    spool.create()
    svc = Service(spool, model="toy", send=lambda *a: None)
    assert svc.submit(body("g", wav, model="gone-soon"), None) == ("g", None)
    assert svc.submit(body("t", wav), None) == ("t", None)
    (folder / "model_index.json").unlink()
    again = Service(spool, model="toy", send=lambda *a: None)
    again.recover()
    assert again.queue.order() == ["t"]
    st = json.loads((spool.job_dir("g") / "status.json").read_text())
    assert st["state"] == "failed"
    assert "cannot resume: model 'gone-soon' is not one of this engine's models" in st["error"]


# -- the job's musical fields ------------------------------------------------------------------------------------


def test_music_fields_reach_the_request_and_their_checks_are_the_engines(wav):
    job = parse_job(body("m", wav, lyrics="la la", bpm=120, key="F# minor", time_signature="6/8", language="en"))
    music = job.request.music
    assert (music.lyrics, music.bpm, music.key, music.time_signature, music.language) == \
        ("la la", 120.0, "F# minor", "6/8", "en")
    assert {f: job.raw[f] for f in MUSIC_FIELDS} == {"lyrics": "la la", "bpm": 120, "key": "F# minor",
                                                     "time_signature": "6/8", "language": "en"}
    for bad, words in ((dict(bpm=500), "bpm 500.0 must be a number between 20 and 300"),
                       (dict(bpm="fast"), "bpm 'fast' must be a number"), (dict(bpm=True), "bpm True"),
                       (dict(time_signature="5/3"), "time signature '5/3' must be N/D"),
                       (dict(lyrics="x" * 4097), "lyrics must be text of at most 4096 characters"),
                       (dict(key=["C"]), "key ['C'] must be text"), (dict(language="e" * 17), "language")):
        with pytest.raises(ProtocolError, match=words.replace("[", r"\[").replace("]", r"\]")) as e:
            parse_job(body("m", wav, **bad))
        assert e.value.job_id == "m"
    with pytest.raises(ProtocolError) as e:  # the value is quoted, but one line stays short
        parse_job(body("m", wav, key="k" * 60_000))
    assert len(str(e.value)) <= 200


def test_the_retake_key_names_the_model_and_depends_on_the_musical_context(wav):
    menu = ModelMenu("tiny")
    a = menu.check(parse_job(body("a", wav, model="tiny-ace", bpm=120)))
    b = menu.check(parse_job(body("b", wav, model="tiny-ace", bpm=120, etas=[0.9])))
    c = menu.check(parse_job(body("c", wav, model="tiny-ace", bpm=90)))
    d = menu.check(parse_job(body("d", wav, bpm=120)))
    assert a.retake_key == b.retake_key and key_model(a.retake_key) == "tiny-ace"
    assert c.retake_key != a.retake_key and key_model(d.retake_key) == "tiny" and d.retake_key != a.retake_key


# -- a worker's loaded models ------------------------------------------------------------------------------------


class Loaded:
    """What the LRU holds for a name in these tests: an object in a reference cycle (as torch modules are), so
    only a full collection frees it."""

    def __init__(self, name: str) -> None:
        self.name, self.me = name, self


def test_the_least_recently_used_model_is_evicted_and_its_memory_freed_even_when_frozen():
    loads, changes = [], []

    def load(name: str) -> Loaded:
        loads.append(name)
        obj = Loaded(name)
        gc.collect()
        gc.freeze()  # as the worker does after loading a model
        return obj

    lru = LoadedModels(load, limit=2, on_change=changes.append)
    refs = {}
    for name in ("a", "b", "a", "c"):  # "a" used again: "b" is the least recent when "c" comes
        with lru.use(name) as obj:
            refs.setdefault(name, weakref.ref(obj))
        del obj
    assert loads == ["a", "b", "c"] and lru.names() == ["a", "c"] and lru.evictions == 1
    assert refs["b"]() is None, "the evicted model is still in memory"
    assert changes[-1] == ["a", "c"] and ["a", "b"] in changes
    gc.unfreeze()


def test_a_model_in_use_is_never_evicted_even_over_the_limit():
    lru = LoadedModels(Loaded, limit=1)
    held = lru.acquire("a")  # a running edit holds it
    lru.acquire("b")
    assert lru.names() == ["a", "b"] and held.name == "a"  # over the limit rather than under a running job
    lru.release("b")
    lru.release("a")
    lru.acquire("c")
    assert lru.names() == ["c"] and lru.evictions == 2


def test_the_default_number_comes_from_the_free_memory_and_the_models_sizes():
    limits = []
    lru = LoadedModels(Loaded, default_limit=lambda: limits.append(1) or 3)
    for n in "abcd":
        lru.release(lru.acquire(n).name)
    assert limits == [1] and lru.limit == 3 and lru.names() == ["b", "c", "d"]
    ace = [("ace-step", "ace-step"), ("tiny", "tiny"), ("sa3-small", "stable-audio-3")]
    # on a GPU, ACE-Step edits in ≈10 GiB and holds ≈6 GiB of bf16 weights: 24 GiB free holds it twice more
    assert default_max_models(24.0, ace, gpu=True) == 3
    assert default_max_models(12.0, ace, gpu=True) == 1
    assert default_max_models(12.0, ace, gpu=False) == 1  # fp32 on a CPU: 12 GiB of weights alone
    assert default_max_models(None, ace, gpu=True) == 1 and default_max_models(2.0, ace, gpu=True) == 1
    assert default_max_models(8.0, [("tiny", "tiny"), ("tiny-ace", "tiny-ace")], gpu=False) == 2
    with pytest.raises(ValueError):
        LoadedModels(Loaded, limit=0)


# -- which worker takes a job --------------------------------------------------------------------------------------


def test_a_job_is_left_to_the_idle_worker_holding_its_model_and_a_re_take_key_goes_with_its_evicted_model():
    pool = Pool()
    a, b = pool.add("cpu:0@h"), pool.add("cpu:1@h")
    pool.set_state(a, "idle")
    pool.set_state(b, "idle")
    pool.set_models(a, ["tiny-ace"])
    order = [("j1", "tiny-ace|0123"), ("j2", "tiny|4567")]
    assert pool.chooser(b)(order) == "j2"  # b leaves the tiny-ace job to a, which holds tiny-ace
    pool.release(b)
    assert pool.chooser(a)(order) == "j1"
    pool.release(a)
    assert "tiny-ace|0123" in a.recent and pool.loaded() == {"tiny-ace"}
    pool.set_models(a, ["tiny"])  # a evicted tiny-ace: the stages it held in memory went with it
    assert "tiny-ace|0123" not in a.recent and pool.loaded() == {"tiny"}
    assert pool.info()[0]["models"] == ["tiny"]
    assert pool.chooser(b)([("j3", "tiny-ace|0123")]) == "j3"  # nobody holds it: whoever asks takes it


def test_max_models_comes_from_the_config_file_and_below_1_stops_serve_with_one_line(tmp_path, monkeypatch):
    from bridge.commands.parser import build_parser
    from bridge.daemon import Daemon, ServeConfig, StartupError

    cfg = tmp_path / "config.toml"
    cfg.write_text("[serve]\nmax_models = 2\n")
    monkeypatch.setenv("AIEDIT_CONFIG", str(cfg))
    assert build_parser().parse_args(["serve"]).max_models == 2
    assert build_parser().parse_args(["serve", "--max-models", "3"]).max_models == 3
    with pytest.raises(StartupError, match="--max-models must be at least 1"):
        Daemon(ServeConfig(model="tiny", spool=str(tmp_path / "spool"), max_models=0))


def test_a_default_given_by_hub_id_is_listed_once_under_its_alias(tmp_path, monkeypatch, wav):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    hub_snapshot(cache, "cvssp/audioldm-s-full-v2")
    menu = ModelMenu("cvssp/audioldm-s-full-v2")
    assert menu.label == "audioldm" and [m.name for m in menu.models].count("audioldm") == 1
    assert menu.check(parse_job(body("h", wav, model="cvssp/audioldm-s-full-v2"))).model == "audioldm"
