"""The real daemon (``python -m bridge serve --model tiny``) over real UDP OSC and a real spool; no mocks.

One daemon serves most tests (module fixture) to keep the torch import and model load to once; the restart,
token and broken-model tests start their own.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from bridge_helpers import TINY_STEPS, Daemon, Listener, job, job_json, make_wav
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

TOK = "s3cret-0123456789abcdef"  # the daemon refuses tokens under 16 characters

STAGES = {"loading", "preparing", "embedding", "finetune", "sampling", "decoding", "scoring", "writing"}
LONG = {"embed": 20000, "tune": 20000, "sample": 4}  # runs until cancelled


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("bridge")
    src = make_wav(root / "src.wav", seconds=0.75, sr=44_100, channels=2)
    with Daemon(root / "spool") as d, Listener(d.port) as osc:
        yield d, osc, src, root


def wait_stage(osc: Listener, jid: str, stages: set[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(a == "/aiedit/progress" and args[1] in stages for a, args in osc.events_for(jid)):
            return
        time.sleep(0.02)
    raise TimeoutError(f"{jid} never reached {stages}: {osc.events_for(jid)}")


def test_ping_answers_right_after_start(env):
    d, osc, _, _ = env
    pong = osc.ping()
    assert pong["version"] == 1 and pong["pid"] == d.proc.pid and pong["port"] == d.port
    assert pong["model"] == "tiny" and pong["spool"] == str(d.spool.resolve()) and pong["heartbeat"] > 0
    assert pong["modes"] == ["lora", "full", "sdedit", "zeta"]  # known from the name, before the model loads
    assert d.daemon_json()["modes"] == pong["modes"]
    assert d.started_in < 5.0, f"first pong after {d.started_in:.2f} s"  # ~0.3 s unloaded; the machine is shared


def test_job_ack_progress_done_and_takes(env):
    d, osc, src, root = env
    mono = make_wav(root / "mono.wav", seconds=1.0, sr=22_050, channels=1, subtype="FLOAT")
    osc.send("/aiedit/job", job_json("j1", src, label="Kick 03", etas=[0.3, 0.5, 0.5]))
    osc.send("/aiedit/job", job_json("j2", mono, source={"path": str(mono), "start": 0.25, "length": 0.5}))
    assert osc.wait("/aiedit/ack", "j1", timeout=5) == ["j1"]
    for jid, path, (sr, ch, frames) in (("j1", src, (44_100, 2, 33_075)), ("j2", mono, (22_050, 1, 11_025))):
        address, args = osc.wait_end(jid, timeout=90)
        assert address == "/aiedit/done", args
        st = json.loads(args[1])
        assert st == d.status(jid)
        assert (st["state"], st["stage"], st["progress"], st["error"]) == ("done", "done", 1.0, None)
        assert (st["sample_rate"], st["channels"], st["frames"]) == (sr, ch, frames)
        assert st["source"]["path"] == str(path) and st["model"] == "tiny"
        prog = [a for addr, a in osc.events_for(jid) if addr == "/aiedit/progress"]
        fr = [p[2] for p in prog]
        assert fr and fr == sorted(fr) and 0.0 <= fr[0] and fr[-1] <= 1.0
        assert {p[1] for p in prog} <= STAGES and "sampling" in {p[1] for p in prog}
        events = [addr for addr, _ in osc.events_for(jid)]
        assert events[0] == "/aiedit/ack" and events[-1] == "/aiedit/done"
        for take in st["takes"]:
            data, rate = sf.read(take["path"], always_2d=True)
            assert (rate, data.shape[1], data.shape[0]) == (sr, ch, frames)
            assert sf.info(take["path"]).subtype == "FLOAT"
            assert Path(take["path"]).parent == d.spool.resolve() / "jobs" / jid / "takes"
        assert st["best"] is None or 0 <= st["best"] < len(st["takes"])
        assert st["network_calls"] == {"embedding": TINY_STEPS["embed"], "finetune": TINY_STEPS["tune"],
                                       "sampling": TINY_STEPS["sample"]}  # one call a step, whatever the batch
    st1 = d.status("j1")
    assert [Path(t["path"]).name for t in st1["takes"]] == ["eta0.30.wav", "eta0.50.wav", "eta0.50-2.wav"]
    assert [t["eta"] for t in st1["takes"]] == [0.3, 0.5, 0.5] and st1["label"] == "Kick 03"
    assert not list(d.spool.glob("jobs/*/takes/.partial-*"))


def test_duplicate_id_leaves_the_job_alone(env):
    d, osc, src, _ = env
    before = d.status("j1")
    osc.send("/aiedit/job", job_json("j1", src, prompt="something else"))
    assert "already taken" in osc.wait("/aiedit/error", "j1", timeout=5)[1]
    assert d.status("j1") == before


def test_cancel_queued_and_running_and_priorities(env):
    d, osc, src, _ = env
    osc.send("/aiedit/job", job_json("long", src, steps=LONG))
    wait_stage(osc, "long", {"embedding"})
    osc.send("/aiedit/job", job_json("b1", src, priority="batch"))
    osc.send("/aiedit/job", job_json("i1", src))
    osc.wait("/aiedit/ack", "i1", timeout=5)
    order = [s["id"] for s in osc.status()]
    assert order[:3] == ["long", "i1", "b1"]  # running, then interactive before batch
    osc.send("/aiedit/cancel", "b1")
    assert osc.wait("/aiedit/cancelled", "b1", timeout=5) == ["b1"]
    osc.send("/aiedit/cancel", json.dumps({"id": "i1"}))
    osc.wait("/aiedit/cancelled", "i1", timeout=5)
    t0 = time.monotonic()
    osc.send("/aiedit/cancel", "long")
    osc.wait("/aiedit/cancelled", "long", timeout=15)
    assert time.monotonic() - t0 < 10
    for jid in ("long", "b1", "i1"):
        st = d.status(jid)
        assert st["state"] == "cancelled" and "cancelled" in st["error"] and st["takes"] == []
    assert not (d.spool / "jobs" / "long" / "takes").exists()
    osc.send("/aiedit/cancel", "long")
    assert "already finished" in osc.wait("/aiedit/error", "long", timeout=5)[1]
    osc.send("/aiedit/cancel", "never-was")
    assert "no job" in osc.wait("/aiedit/error", "never-was", timeout=5)[1]
    assert osc.ping()


def test_spool_file_jobs_and_cancels(env):
    d, _, src, _ = env
    d.drop("from-reaper.json", json.dumps(job("sp1", src)))
    st = d.wait_status("sp1", timeout=60)
    assert st["state"] == "done" and len(st["takes"]) == 2
    assert all(Path(t["path"]).is_file() for t in st["takes"])
    assert not (d.spool / "inbox" / "from-reaper.json").exists()
    d.drop("cancel.json", json.dumps({"version": 1, "op": "cancel", "id": "sp-unknown"}))
    err = d.spool / "inbox" / "rejected" / "cancel.json.error.txt"
    deadline = time.monotonic() + 10
    while not err.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "no job" in err.read_text()


def test_two_clients_at_once(env):
    d, _, src, _ = env
    with Listener(d.port) as a, Listener(d.port) as b:
        a.send("/aiedit/job", job_json("ca", src))
        b.send("/aiedit/job", job_json("cb", src))
        assert a.wait_end("ca", timeout=90)[0] == "/aiedit/done"
        assert b.wait_end("cb", timeout=90)[0] == "/aiedit/done"
        assert not a.events_for("cb") and not b.events_for("ca")


def test_model_mismatch_fails_the_job(env):
    d, osc, src, _ = env
    osc.send("/aiedit/job", job_json("mm", src, model="audioldm2"))
    msg = osc.wait("/aiedit/error", "mm", timeout=5)[1]
    assert "tiny" in msg and "audioldm2" in msg
    assert d.status("mm")["state"] == "failed" and d.status("mm")["error"] == msg


def _osc(address: str, *args) -> bytes:
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


def test_garbage_does_not_hurt(env):
    d, _, src, root = env
    rng = random.Random(7)
    with Listener(d.port) as osc:
        for _ in range(200):
            osc.send_raw(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300))))
        osc.send_raw(b"/aiedit/job\x00")  # truncated OSC
        osc.send_raw(b"/aiedit/job\x00\x00\x00\x00,s\x00\x00abc")  # string without its terminator
        osc.send_raw(b"#bundle\x00" + b"\xff" * 8)  # empty bundle, far-future time tag
        future = OscBundleBuilder(int(time.time()) + 3600)  # must not make the server sleep an hour
        future.add_content(OscMessageBuilder("/aiedit/ping").build())
        osc.send_raw(future.build().dgram)
        bad_job_msgs = [
            _osc("/aiedit/job"), _osc("/aiedit/job", 5), _osc("/aiedit/job", 1.5), _osc("/aiedit/job", b"{}"),
            _osc("/aiedit/job", "{}", "{}"), _osc("/aiedit/job", "not json"), _osc("/aiedit/job", "[1]"),
            _osc("/aiedit/job", "x" * 60_000), _osc("/aiedit/job", json.dumps(job("../../etc", src))),
            _osc("/aiedit/job", json.dumps(job("a/b", src))), _osc("/aiedit/job", json.dumps(job("", src))),
        ]
        for m in bad_job_msgs:
            osc.send_raw(m)
        for i in range(30):
            osc.send_raw(_osc("/aiedit/job", json.dumps(job(f"bad-{i}", src, etas=[9.0 + i]))))
        osc.send_raw(_osc("/aiedit/job", json.dumps(job("nofile", "/nonexistent/x.wav"))))
        osc.send_raw(_osc("/aiedit/job", json.dumps(job("relpath", "x.wav"))))
        osc.send_raw(_osc("/aiedit/cancel"))
        osc.send_raw(_osc("/aiedit/cancel", 5))
        osc.send_raw(_osc("/aiedit/cancel", "../../x"))
        osc.send_raw(_osc("/aiedit/status", "127.0.0.1"))
        osc.send_raw(_osc("/aiedit/ping", "127.0.0.1", "x"))
        osc.send_raw(_osc("/aiedit/jobs", "x"))
        osc.send_raw(_osc("/aiedit/*", "x"))  # patterns are not expanded: no handler runs
        osc.send_raw(_osc("/other/app", 1))
        osc.send_raw(_osc("/aiedit/job", json.dumps(job("late-ok", src, reply={"host": "127.0.0.1",
                                                                                   "port": osc.port}))))
        assert osc.wait("/aiedit/ack", "late-ok", timeout=10)
        pong = osc.ping()
        assert pong["pid"] == d.proc.pid and d.alive()
        errors = [a for addr, a in osc.events if addr == "/aiedit/error"]
        assert sum(1 for a in errors if a[0] == "") >= len(bad_job_msgs) + 5  # refusals without an id
        assert sum(1 for a in errors if a[0].startswith("bad-")) == 30
        assert any("unknown address /aiedit/jobs" in a[1] for a in errors)
        assert any("unknown address /aiedit/*" in a[1] for a in errors)  # not expanded to every handler
        for i in range(30):
            st = d.status(f"bad-{i}")
            assert st["state"] == "failed" and "outside" in st["error"]
        assert "not found" in d.status("nofile")["error"]
        assert "absolute" in d.status("relpath")["error"]
        assert osc.wait_end("late-ok", timeout=90)[0] == "/aiedit/done"
    assert not (root / "etc").exists() and not (d.spool / "etc").exists()
    assert {p.name for p in (d.spool / "jobs").iterdir()} >= {"bad-0", "nofile", "late-ok"}
    assert all(p.parent.parent == d.spool.resolve() / "jobs" for p in d.spool.resolve().rglob("status.json"))
    # malformed inbox files
    old = time.time() - 60
    half = d.spool / "inbox" / ".half.tmp"
    half.write_text('{"version": 1, "id": "half", ')
    os.utime(half, (old, old))
    os.replace(half, d.spool / "inbox" / "half.json")
    d.drop("binary.json", b"\x00\xff" * 100)
    d.drop("list.json", "[1, 2, 3]")
    d.drop("badjob.json", json.dumps(job("inbox-bad", src, prompt="")))
    d.drop("dup.json", json.dumps(job("j1", src)))
    d.drop("huge.json", json.dumps(job("huge", src, label="x" * 70_000)))
    d.drop("ignored.txt", "not a message")
    rejected = d.spool / "inbox" / "rejected"
    names = {"half.json", "binary.json", "list.json", "badjob.json", "dup.json", "huge.json"}
    deadline = time.monotonic() + 15
    while not names <= {p.name for p in rejected.iterdir()} and time.monotonic() < deadline:
        time.sleep(0.05)
    for n in names:
        assert (rejected / n).exists() and (rejected / f"{n}.error.txt").read_text().strip()
    assert "prompt" in (rejected / "badjob.json.error.txt").read_text()
    assert d.status("inbox-bad")["state"] == "failed"
    assert "already taken" in (rejected / "dup.json.error.txt").read_text()
    assert "too large" in (rejected / "huge.json.error.txt").read_text()
    assert (d.spool / "inbox" / "ignored.txt").exists()
    with Listener(d.port) as osc:
        assert osc.ping()["pid"] == d.proc.pid


def test_refuses_open_host_without_token(tmp_path):
    d = Daemon(tmp_path / "spool", "--host", "0.0.0.0", start=False)
    with pytest.raises(RuntimeError, match="--token"):
        d.start(timeout=20)
    assert d.proc.returncode == 2


def test_token_is_required_when_set(tmp_path):
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    with Daemon(tmp_path / "spool", "--token", TOK) as d, Listener(d.port) as osc:
        osc.send("/aiedit/job", job_json("t1", src))
        assert "token" in osc.wait("/aiedit/error", "t1", timeout=5)[1]
        assert d.status("t1") is None  # an unauthenticated client creates no files
        osc.send("/aiedit/job", job_json("t2", src, token="wrong"))
        assert "token" in osc.wait("/aiedit/error", "t2", timeout=5)[1]
        osc.send("/aiedit/job", job_json("t3", src, token=TOK, model="other"))  # passes the token check
        assert "model" in osc.wait("/aiedit/error", "t3", timeout=5)[1]
        assert "token" in osc.request("/aiedit/cancel", "/aiedit/error", "t3")[1]
        assert osc.ping(token=TOK)["pid"] == d.proc.pid


def test_model_that_fails_to_load(tmp_path):
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    with Daemon(tmp_path / "spool", model="/nonexistent/folder") as d, Listener(d.port) as osc:
        osc.send("/aiedit/job", job_json("m1", src))
        address, args = osc.wait_end("m1", timeout=90)
        assert address == "/aiedit/error"
        msg = args[1]
        assert "nonexistent" in msg and "\n" not in msg and len(msg) < 400
        st = d.status("m1")
        assert st["state"] == "failed" and st["error"] == msg
        assert osc.ping()["pid"] == d.proc.pid


def test_stop_restart_resume_and_crash(tmp_path):
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    spool = tmp_path / "spool"
    d = Daemon(spool)
    with Listener(d.port) as osc:
        osc.send("/aiedit/job", job_json("r1", src, steps=LONG))
        osc.send("/aiedit/job", job_json("q1", src, priority="batch"))
        wait_stage(osc, "r1", {"embedding"})
        assert d.stop(signal.SIGTERM) == 0  # SIGTERM mid-job
        assert osc.wait("/aiedit/cancelled", "r1", timeout=1)
    assert not (spool / "daemon.json").exists()
    r1 = d.status("r1")
    assert r1["state"] == "cancelled" and "stopped" in r1["error"]
    assert d.status("q1")["state"] == "queued"
    assert not list(spool.glob("jobs/r1/takes/*"))
    # while stopped: new files in the inbox, and a half-written take as a crash would leave it
    d.drop("while-stopped.json", json.dumps(job("f1", src)))
    (spool / "jobs" / "q1" / "takes").mkdir(parents=True)
    (spool / "jobs" / "q1" / "takes" / ".partial-crash.wav").write_bytes(b"RIFF")
    d.start()
    assert d.wait_status("q1", timeout=90)["state"] == "done"
    assert d.wait_status("f1", timeout=60)["state"] == "done"
    assert d.status("q1")["created"] < d.status("f1")["created"]
    assert not list(spool.glob("jobs/*/takes/.partial-*"))
    assert d.status("r1")["state"] == "cancelled"
    # a crash (SIGKILL) mid-job: the job reads failed after the next start
    with Listener(d.port) as osc:
        osc.send("/aiedit/job", job_json("k1", src, steps=LONG))
        wait_stage(osc, "k1", {"embedding"})
    d.kill()
    assert d.status("k1")["state"] == "running"
    d.start()
    try:
        st = d.status("k1")
        assert st["state"] == "failed" and st["error"] == "the engine stopped during this job"
        with Listener(d.port) as osc:
            ids = [s["id"] for s in osc.status()]
            assert {"k1", "q1", "f1", "r1"} <= set(ids)
    finally:
        d.stop()


def test_serve_precision_and_the_model_auto_resolved_to(tmp_path):
    """`serve --precision bf16` reaches the engine (weights stored in bf16, a job still gives takes), and
    daemon.json names the model `auto` loaded rather than "auto" once it is loaded."""
    src = make_wav(tmp_path / "src.wav", seconds=0.5, sr=16_000, channels=1)
    with Daemon(tmp_path / "spool", "--precision", "bf16", "--preload", model="auto",
                env={"AIEDIT_CONFIG": str(tmp_path / "none.toml"), "HF_HOME": str(tmp_path / "hf")}) as d, \
            Listener(d.port) as osc:
        osc.send("/aiedit/job", job_json("p1", src))
        address, args = osc.wait_end("p1", timeout=120)
        assert address == "/aiedit/done", args
        st = json.loads(args[1])
        assert st["model"] == "toy"
        deadline = time.monotonic() + 15  # daemon.json is rewritten by the heartbeat
        while (d.daemon_json() or {}).get("model") != "toy" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert d.daemon_json()["model"] == "toy"
        for take in st["takes"]:
            data, _ = sf.read(take["path"], always_2d=True)
            assert data.shape == (8000, 1) and np.isfinite(data).all()
        assert "model toy loaded on cpu, weights bfloat16" in d.stderr() + _log(d)


def _log(d: Daemon) -> str:
    return "".join(p.read_text(errors="replace") for p in d.spool.glob("*.log*"))
