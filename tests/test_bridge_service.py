"""Service-level races and edge cases that a live daemon cannot reproduce on demand."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from bridge.jobs.protocol import CancelRequest, ReplyTo
from bridge.jobs.service import Service
from bridge.jobs.spool import Spool


def make_service(tmp_path: Path) -> tuple[Service, list, Path]:
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16000), 16000)
    spool = Spool(tmp_path / "spool")
    spool.create()
    sent: list = []
    return Service(spool, model="tiny", send=lambda to, addr, args: sent.append((addr, args))), sent, wav


def test_a_cancel_between_the_workers_dequeue_and_its_lock_still_cancels(tmp_path):
    svc, _, wav = make_service(tmp_path)
    svc.submit({"version": 1, "id": "j1", "source": {"path": str(wav)}, "prompt": "x", "etas": [0.5]}, None)
    dequeue = svc.queue.get
    answers = {}

    def get_then_cancel(timeout, choose=None):  # the OSC thread runs right after the worker popped the id
        jid = dequeue(timeout, choose)
        answers["cancel"] = svc.cancel(CancelRequest(jid), None)
        return jid

    svc.queue.get = get_then_cancel
    assert svc.next_job(0.1) is None
    assert answers["cancel"] is None
    status = json.loads((svc.spool.job_dir("j1") / "status.json").read_text())
    assert status["state"] == "cancelled"


def test_a_lone_surrogate_is_refused_and_does_not_burn_the_id(tmp_path):
    svc, sent, wav = make_service(tmp_path)
    msg = f'{{"version":1,"id":"s1","source":{{"path":"{wav}"}},"prompt":"dog","label":"\\ud800","etas":[0.5]}}'
    svc.submit(msg, ReplyTo("127.0.0.1", 9))
    assert sent and sent[-1][0] == "/aiedit/error" and "Unicode" in sent[-1][1][1]
    jid, err = svc.submit(msg.replace("\\ud800", "ok"), None)
    assert (jid, err) == ("s1", None)


def test_daemon_json_lists_the_models_modes_and_a_mode_it_cannot_run_is_refused(tmp_path):
    svc, sent, wav = make_service(tmp_path)
    assert svc.daemon_info()["modes"] == ["lora", "full", "sdedit", "zeta"]
    job = {"version": 1, "id": "f1", "source": {"path": str(wav)}, "prompt": "x", "etas": [0.5], "mode": "flowedit"}
    _, err = svc.submit(job, ReplyTo("127.0.0.1", 9))
    assert err is not None and "cannot run mode 'flowedit'" in err and "lora, full, sdedit, zeta" in err
    assert "\n" not in err and sent[-1][0] == "/aiedit/error"
    # the modes are the named model's: tiny-sa3 runs flowedit, not repaint
    assert svc.submit({**job, "id": "f2", "model": "tiny-sa3"}, None) == ("f2", None)
    assert json.loads((svc.spool.job_dir("f2") / "status.json").read_text())["model"] == "tiny-sa3"
    _, err = svc.submit({**job, "id": "f3", "model": "tiny-sa3", "mode": "repaint",
                         "inpaint": {"start": 0.1, "end": 0.5}}, None)
    assert err is not None and "model 'tiny-sa3' cannot run mode 'repaint'" in err
    svc.model_loaded("tiny", ("lora", "full"))  # the loaded model's own list replaces the one known from its name
    assert svc.daemon_info()["modes"] == ["lora", "full"]


def test_modes_are_known_from_the_model_name_before_it_loads(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.create()
    svc = Service(spool, model="tiny-sa3", send=lambda *a: None)
    assert svc.daemon_info()["modes"] == ["lora", "full", "sdedit", "flowedit"]


def test_requeue_of_a_job_cancelled_meanwhile_is_refused_and_a_requeued_job_restarts_its_progress(tmp_path):
    """Review finding 3: a cancel that lands between a Ray worker's death and its requeue is not lost (the job
    must not run again and end done), and a job run again reports progress from 0."""
    svc, _, wav = make_service(tmp_path)
    for jid in ("c1", "r1"):
        svc.submit({"version": 1, "id": jid, "source": {"path": str(wav)}, "prompt": "x", "etas": [0.5]}, None)
    job, token = svc.next_job(0.1, "ray:0@h")
    assert job.id == "c1"
    assert svc.cancel(CancelRequest("c1"), None) is None and token.cancelled  # answered: cancelled
    assert svc.requeue("c1", "its worker died") is False  # so it must not run again
    assert "c1" not in svc.queue
    job, token = svc.next_job(0.1, "ray:0@h")
    assert job.id == "r1"
    svc.progress("r1", "finetune", 0.7)
    assert svc.requeue("r1", "its worker died") is True
    st = json.loads((svc.spool.job_dir("r1") / "status.json").read_text())
    assert (st["state"], st["progress"], st["worker"]) == ("queued", 0.0, None)
    job, token = svc.next_job(0.1, "ray:1@h")
    svc.progress("r1", "embedding", 0.05)  # the second run starts over: reported, not held at 0.7
    assert json.loads((svc.spool.job_dir("r1") / "status.json").read_text())["progress"] == 0.05


def test_an_id_reused_while_prune_removes_its_old_folder_is_refused_and_free_afterwards(tmp_path):
    """Review finding 8: prune forgets an id under the lock and removes its folder after. A job that reuses the id
    in between must not be created there (the removal would delete it): the folder still exists, so it is refused;
    once the folder is gone the id is free and its new job is intact."""
    svc, _, wav = make_service(tmp_path)
    body = {"version": 1, "id": "old", "source": {"path": str(wav)}, "prompt": "x", "etas": [0.5]}
    svc.submit(body, None)
    svc.next_job(0.1, "w")
    svc.finish("old", "failed", "x")
    svc.table.status["old"]["updated"] = time.time() - 30 * 86400  # finished a month ago
    remove, answers = svc.retention.remove_folders, {}

    def reuse_then_remove(ids):  # a client reuses the id between forget and the removal
        answers["between"] = svc.submit(body, None)
        remove(ids)

    svc.retention.remove_folders = reuse_then_remove
    assert svc.prune() == 1
    assert answers["between"][0] is None and "already taken" in answers["between"][1]
    assert not svc.spool.job_exists("old")
    assert svc.submit(body, None) == ("old", None)
    assert json.loads((svc.spool.job_dir("old") / "status.json").read_text())["state"] == "queued"
