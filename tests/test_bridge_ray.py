"""``aiedit serve --ray``: the daemon on a local Ray instance with two CPU actors (the tiny model each).

One Ray start for the module (``ray.init(num_cpus=3)`` here, in the test process; the daemon joins it by
address, so this process can ``ray.kill`` the daemon's actors), one daemon with two actors, real UDP; the third CPU
is for a daemon-side Ray worker built in this process (a Service, a Pool, a RemoteWorker), where faults can be
injected. Needs the ``cluster``
extra (``bash scripts/dev test`` installs it)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
from bridge_helpers import ROOT, Daemon, Listener, job_json, make_wav

from bridge.jobs.protocol import CancelRequest

ray = pytest.importorskip("ray", reason="the Ray tests need the cluster extra: pip install -e '.[cluster]'")

MEDIUM = {"embed": 30, "tune": 10, "sample": 4}  # a few seconds per job on a loaded CPU: long enough to kill mid-job
LONG = {"embed": 20000, "tune": 3, "sample": 4}  # runs until cancelled


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # the actor processes are started by this instance's raylet and inherit this environment: they must import
    # this checkout's bridge/ and engine/ (CI installs it editable; PYTHONPATH makes sure of it here)
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "OMP_NUM_THREADS")}
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, object_store_memory=150 * 1024 * 1024)
    finally:  # the raylet has taken its copy; later tests see the environment they had
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    tmp = tmp_path_factory.mktemp("ray")
    try:
        with Daemon(tmp / "spool", "--ray", ray.get_runtime_context().gcs_address, "--devices", "cpu,cpu",
                    "--max-models", "1") as d:
            _wait_states(d, ["idle", "idle"], timeout=240)
            yield d, make_wav(tmp / "src.wav")
    finally:
        ray.shutdown()


def _workers(d: Daemon) -> list[dict]:
    return (d.daemon_json() or {}).get("workers", [])


def _wait_states(d: Daemon, states: list[str], timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while [w["state"] for w in _workers(d)] != states:
        assert d.alive() and time.monotonic() < deadline, (_workers(d), d.stderr()[-3000:])
        time.sleep(0.2)
    return _workers(d)


def _ends(osc: Listener, jid: str) -> list[str]:
    return [a for a, _ in osc.events_for(jid) if a in ("/aiedit/done", "/aiedit/error", "/aiedit/cancelled")]


def test_two_actors_run_a_batch_and_the_daemon_writes_their_takes(cluster):
    d, src = cluster
    names = {w["name"] for w in _workers(d)}
    assert names == {n for n in names if n.startswith(("cpu:0@", "cpu:1@"))} and len(names) == 2
    with Listener(d.port) as osc:
        for i in range(4):
            osc.send("/aiedit/job", job_json(f"batch{i}", src, seed=i, priority="batch"))
        done = []
        for i in range(4):
            address, args = osc.wait_end(f"batch{i}", timeout=240)
            assert address == "/aiedit/done", args
            done.append(json.loads(args[1]))  # (progress streaming is checked on a long job, in the cancel test)
    assert {st["worker"] for st in done} == names
    for st in done:
        assert [t["path"] for t in st["takes"]] == [str(d.spool / "jobs" / st["id"] / "takes" / n)
                                                    for n in ("eta0.30.wav", "eta0.60.wav")]
        assert st["network_calls"]["sampling"] > 0 and st["model"] == "tiny"  # as a local worker reports them
        info = sf.info(st["takes"][0]["path"])
        assert (info.frames, info.channels, info.samplerate, info.subtype) == (44_100, 2, 44_100, "FLOAT")
        # issue 24: the actor made the pictures, the daemon wrote them with the takes
        pics = [st["input_spectrogram"], *(t["spectrogram"] for t in st["takes"])]
        assert all(Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Path(p).stat().st_size <= 65536 for p in pics)
    assert "submit→start" in d.stderr()  # the Ray overhead per job is logged


def test_an_actor_serves_the_model_a_job_names_evicting_with_max_models_1(cluster):
    """Each actor holds one model (--max-models 1): a job naming another loads it there (stage "loading"), the done
    status names it and carries the edit's notes, and daemon.json says which actor holds which model."""
    d, src = cluster
    with Listener(d.port) as osc:
        for jid, model in (("rm-sa3", "tiny-sa3"), ("rm-ace", "tiny-ace")):
            osc.send("/aiedit/job", job_json(jid, src, model=model, etas=[0.5], bpm=100))
        for jid, model in (("rm-sa3", "tiny-sa3"), ("rm-ace", "tiny-ace")):
            address, args = osc.wait_end(jid, timeout=240)
            assert address == "/aiedit/done", args
            st = json.loads(args[1])
            assert st["model"] == model and len(st["takes"]) == 1
            assert ("bpm ignored: tiny-sa3 does not take musical context" in st["notes"]) == (model == "tiny-sa3")
            stages = [a[1] for addr, a in osc.events_for(jid) if addr == "/aiedit/progress"]
            assert "loading" in stages, stages
    held = [w["models"] for w in _wait_states(d, ["idle", "idle"], timeout=30)]
    assert all(len(m) == 1 for m in held) and {"tiny-sa3", "tiny-ace"} & {m[0] for m in held}, held
    loaded = {m["name"] for m in d.daemon_json()["models"] if m["loaded"]}
    assert loaded == {m[0] for m in held}


def test_cancel_reaches_the_actor_running_the_job(cluster):
    d, src = cluster
    with Listener(d.port) as osc:
        osc.send("/aiedit/job", job_json("remote-long", src, steps=LONG))
        deadline = time.monotonic() + 60
        while (d.status("remote-long") or {}).get("stage") != "embedding":  # progress streamed from the actor
            assert time.monotonic() < deadline, d.status("remote-long")
            time.sleep(0.05)
        t0 = time.monotonic()
        osc.send("/aiedit/cancel", "remote-long")
        assert osc.wait_end("remote-long", timeout=30)[0] == "/aiedit/cancelled"
        assert time.monotonic() - t0 < 15
    st = d.status("remote-long")
    assert st["state"] == "cancelled" and st["takes"] == []
    assert not list((d.spool / "jobs" / "remote-long").glob("takes/*.wav"))
    _wait_states(d, ["idle", "idle"], timeout=30)  # the actor is free again (it stopped, it did not die)


def test_a_killed_actor_mid_job_still_gets_every_job_done_exactly_once(cluster):
    d, src = cluster
    jobs = [f"kill{i}" for i in range(4)]
    with Listener(d.port) as osc:
        for i, jid in enumerate(jobs):
            osc.send("/aiedit/job", job_json(jid, src, seed=100 + i, steps=MEDIUM, priority="batch"))
        deadline = time.monotonic() + 120
        while not (early := [st for jid in jobs if (st := d.status(jid) or {}).get("stage") == "embedding"]):
            assert time.monotonic() < deadline, [d.status(j) for j in jobs]
            time.sleep(0.05)
        job, actor = early[0]["id"], {w["name"]: w["actor"] for w in _workers(d)}[early[0]["worker"]]
        ray.kill(ray.get_actor(actor, namespace="aiedit"), no_restart=True)  # mid-job: its stage 1 has just begun
        for jid in jobs:
            address, args = osc.wait_end(jid, timeout=300)
            assert address == "/aiedit/done", (jid, args)
        time.sleep(1.0)  # a second end event, if there were one, would arrive now
        for jid in jobs:
            assert _ends(osc, jid) == ["/aiedit/done"], osc.events_for(jid)
            assert d.status(jid)["state"] == "done" and len(d.status(jid)["takes"]) == 2
    assert f"job {job} queued again" in d.stderr()
    # the dead actor was replaced by a new one under a new actor name
    workers = _wait_states(d, ["idle", "idle"], timeout=180)
    assert actor not in {w["actor"] for w in workers}


def test_a_cluster_address_where_nothing_listens_stops_the_daemon_with_one_line(tmp_path):
    with socket.socket() as s:  # a TCP port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = subprocess.run([sys.executable, "-m", "bridge", "serve", "--model", "tiny", "--port", "0", "--spool",
                        str(tmp_path / "spool"), "--ray", f"127.0.0.1:{port}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2
    assert (f"aiedit serve: nothing answers at 127.0.0.1:{port} (Connection refused): is `ray start --head` running "
            "there?") in r.stderr.splitlines()


def test_ray_local_starts_its_own_instance_runs_a_job_and_ends_it(tmp_path):
    src = make_wav(tmp_path / "src.wav")
    d = Daemon(tmp_path / "spool", "--ray", "local", "--devices", "cpu")
    try:
        _wait_states(d, ["idle"], timeout=240)
        with Listener(d.port) as osc:
            osc.send("/aiedit/job", job_json("local1", src))
            address, args = osc.wait_end("local1", timeout=120)
            assert address == "/aiedit/done", args
        assert json.loads(args[1])["worker"].startswith("cpu:0@")
    finally:
        assert d.stop() == 0, d.stderr()[-3000:]
    assert "stopped" in d.stderr().splitlines()[-1]


# -- the daemon's Ray worker thread in this process (review findings 1, 2, 4) ------------------------------------
# A Service, a Pool and one RemoteWorker built as bridge.daemon builds them, on this module's cluster (its third
# CPU), so that a fault can be injected where no client input reaches (findings 2 and 4).

LIMITS = ("1", "2", "1")  # --max-seconds, --max-channels, --max-output-mb of the in-process service


class InProcess:
    def __init__(self, root, kind: str = "cpu", index: int = 7) -> None:
        from bridge.jobs.limits import Limits
        from bridge.jobs.service import Service
        from bridge.jobs.spool import Spool
        from bridge.workers import remote
        from bridge.workers.pool import Pool

        self.spool = Spool(root / "spool")
        self.spool.create()
        self.service = Service(self.spool, model="tiny", send=lambda to, addr, args: None,
                               limits=Limits(*(float(x) for x in LIMITS)))
        self.pool = Pool()
        self.slot = self.pool.add(f"ray:{index}")
        self.worker = remote.RemoteWorker(self.service, self.pool, self.slot, ray, kind, index,
                                          cache_dir=None, precision="auto", compile_unet=False)

    def submit(self, body: dict) -> None:
        jid, err = self.service.submit(body, None)
        assert jid == body["id"], err

    def status(self, jid: str) -> dict:
        return json.loads((self.spool.job_dir(jid) / "status.json").read_text())

    def wait(self, jid: str, states=("done", "failed", "cancelled"), timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while (st := self.status(jid))["state"] not in states:
            assert time.monotonic() < deadline and self.worker.is_alive(), (st, self.worker.is_alive())
            time.sleep(0.05)
        return st

    def close(self) -> None:
        self.service.stop_running("test over")
        self.worker.join(timeout=30)
        self.worker._kill(self.worker.actor)


@pytest.fixture(scope="module")
def inproc(cluster, tmp_path_factory):
    p = InProcess(tmp_path_factory.mktemp("inproc"))
    p.worker.start()
    try:
        yield p
    finally:
        p.close()


def test_ray_worker_checks_the_limits_again_on_the_file_it_reads(inproc, tmp_path):
    p = inproc
    small = make_wav(tmp_path / "small.wav", seconds=0.5, sr=8000, channels=1)
    src = tmp_path / "src.wav"
    os.link(small, src)
    p.submit(json.loads(job_json("rblocker", make_wav(tmp_path / "b.wav", seconds=0.5), steps=LONG, etas=[0.5])))
    p.wait("rblocker", states=("running",), timeout=240)  # the worker is busy: the next job waits in the queue
    p.submit(json.loads(job_json("rgrown", src, etas=[0.5])))  # accepted: 0.5 s mono
    os.replace(make_wav(tmp_path / "big.wav", seconds=6.0, sr=8000, channels=6), src)  # after the ack
    assert p.service.cancel(CancelRequest("rblocker"), None) is None
    st = p.wait("rgrown")
    assert st["state"] == "failed" and "changed after the job was accepted" in st["error"], st
    assert "6.0 s" in st["error"] and "--max-seconds" in st["error"] and st["takes"] == []


def test_an_unexpected_error_in_the_ray_worker_thread_fails_the_job_and_frees_the_slot(inproc, tmp_path,
                                                                                        monkeypatch):
    p = inproc
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    real = p.service.read_source
    for jid, exc in (("room", MemoryError()), ("rbug", KeyError("boom"))):
        def fail(*args, exc=exc):
            raise exc
        monkeypatch.setattr(p.service, "read_source", fail)
        p.submit(json.loads(job_json(jid, src, etas=[0.5])))
        st = p.wait(jid, timeout=60)
        assert st["state"] == "failed", st
        deadline = time.monotonic() + 10
        while p.slot.state != "idle":  # the slot was released
            assert time.monotonic() < deadline, p.pool.info()
            time.sleep(0.05)
    assert "out of memory" in p.status("room")["error"]
    assert "internal error (KeyError" in p.status("rbug")["error"]
    monkeypatch.setattr(p.service, "read_source", real)
    p.submit(json.loads(job_json("rafter", src, etas=[0.5])))  # the same thread runs the next job
    st = p.wait("rafter")
    assert st["state"] == "done" and len(st["takes"]) == 1, st
    assert [w["state"] for w in p.pool.info()] == ["idle"]


def test_an_actor_that_cannot_be_placed_is_killed_and_queued_jobs_fail_with_the_reason(cluster, tmp_path,
                                                                                         monkeypatch):
    from bridge.workers import remote

    monkeypatch.setattr(remote, "PLACE_S", 1.0)
    monkeypatch.setattr(remote, "RESTART_S", 0.2)
    monkeypatch.setattr(remote, "START_FAILURES", 2)
    p = InProcess(tmp_path, kind="cuda", index=8)  # this cluster has no GPU: Ray cannot place it
    p.submit(json.loads(job_json("nogpu", make_wav(tmp_path / "src.wav", seconds=0.5), etas=[0.5])))
    p.worker.start()
    try:
        st = p.wait("nogpu", timeout=60)
        assert st["state"] == "failed", st
        assert "no Ray worker could start" in st["error"] and "num_gpus=1" in st["error"], st["error"]
        name = p.slot.extra["actor"]
        deadline = time.monotonic() + 20
        while True:  # given up and killed: it no longer waits for a GPU (a killed actor cannot be looked up)
            try:
                ray.get_actor(name, namespace="aiedit")
            except ValueError:
                break
            assert time.monotonic() < deadline, f"{name} was not killed"
            time.sleep(0.2)
    finally:
        p.close()


class _NotRay:
    """A TCP service that is not Ray: it accepts, says ``banner`` (or nothing), reads and never answers more."""

    def __init__(self, banner: bytes) -> None:
        import threading

        self.banner = banner
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.banner:
                conn.sendall(self.banner)

    def close(self) -> None:
        for c in [*self.conns, self.sock]:
            c.close()


@pytest.mark.parametrize("banner", [b"", b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"])
def test_a_cluster_address_where_another_service_listens_stops_the_daemon_with_one_line(tmp_path, banner):
    """Finding 10: jobs were acked and queued for ever, with no error, when --ray named a port that is not Ray's."""
    other = _NotRay(banner)
    try:
        r = subprocess.run([sys.executable, "-m", "bridge", "serve", "--model", "tiny", "--port", "0", "--spool",
                            str(tmp_path / "spool"), "--ray", f"127.0.0.1:{other.port}"], cwd=ROOT,
                           capture_output=True, text=True, timeout=90, env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        other.close()
    assert r.returncode == 2, r.stderr[-2000:]
    assert (f"aiedit serve: 127.0.0.1:{other.port} is not a Ray cluster (it does not answer as Ray's head node "
            "does): give the address `ray start --head` prints (default port 6379)") in r.stderr.splitlines()
    assert [line for line in r.stderr.splitlines() if line.startswith("aiedit serve:")] == [
        f"aiedit serve: 127.0.0.1:{other.port} is not a Ray cluster (it does not answer as Ray's head node does): "
        "give the address `ray start --head` prints (default port 6379)"]
