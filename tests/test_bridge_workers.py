"""Several workers in one daemon (``aiedit serve --devices cpu,cpu``): jobs side by side, each status naming its
worker, cancel reaching the right one; and the pool's choice of job per free worker (re-take affinity).

One real daemon for the module (two tiny models on the CPU), real UDP, as the other bridge tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from bridge_helpers import ROOT, Daemon, Listener, job_json, make_wav

from bridge.jobs.queue import JobQueue
from bridge.workers.pool import HOLD_S, Pool, parse_devices, worker_names

LONG = {"embed": 20000, "tune": 3, "sample": 4}  # runs until cancelled


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workers")
    src = make_wav(tmp / "src.wav")
    # a link planted where the shared stage cache once lived: the daemon must neither write through it nor read it
    (tmp / "spool").mkdir(mode=0o700)
    (tmp / "outside").mkdir()
    (tmp / "spool" / "stage-cache").symlink_to(tmp / "outside")
    with Daemon(tmp / "spool", "--devices", "cpu,cpu", "--preload") as d:
        deadline = time.monotonic() + 120
        while [w["state"] for w in (d.daemon_json() or {}).get("workers", [])] != ["idle", "idle"]:
            assert d.alive() and time.monotonic() < deadline, d.stderr()[-2000:]
            time.sleep(0.2)
        yield d, src


def _interval(osc: Listener, jid: str) -> tuple[float, float]:
    """(first progress, end) arrival times of a job's events."""
    with osc._cond:
        times = [t for (a, args), t in zip(osc.events, osc.times, strict=True) if args and args[0] == jid]
        kinds = [a for a, args in osc.events if args and args[0] == jid]
    first = next(t for a, t in zip(kinds, times, strict=True) if a == "/aiedit/progress")
    return first, times[-1]


def test_four_jobs_sent_at_once_run_side_by_side_on_two_named_workers(two):
    d, src = two
    info = d.daemon_json()
    names = [w["name"] for w in info["workers"]]
    assert len(set(names)) == 2 and all(n.startswith(("cpu:0@", "cpu:1@")) for n in names), names
    with Listener(d.port) as osc:
        for i in range(4):
            osc.send("/aiedit/job", job_json(f"side{i}", src, seed=10 + i, priority="batch"))
        done = {}
        for i in range(4):
            address, args = osc.wait_end(f"side{i}", timeout=180)
            assert address == "/aiedit/done", args
            done[f"side{i}"] = json.loads(args[1])
        workers = {jid: st["worker"] for jid, st in done.items()}
        assert set(workers.values()) == set(names), workers  # both workers ran jobs
        for jid, st in done.items():
            assert d.status(jid)["worker"] == st["worker"] and len(st["takes"]) == 2
        # side by side: a job on one worker started before a job on the other ended
        spans = {jid: _interval(osc, jid) for jid in done}
        assert any(spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]
                   for a in done for b in done if workers[a] != workers[b]), spans
    # the stage cache the workers share is the daemon's own: nothing went through the link planted in the spool
    assert not any((d.spool.parent / "outside").iterdir()), "the stage cache wrote through a planted link"


def test_cancel_reaches_the_worker_running_the_job_and_the_other_keeps_going(two):
    d, src = two
    with Listener(d.port) as osc:
        osc.send("/aiedit/job", job_json("longA", src, steps=LONG))
        osc.send("/aiedit/job", job_json("longB", src, steps=LONG))
        deadline = time.monotonic() + 60
        while not all((d.status(j) or {}).get("stage") == "embedding" for j in ("longA", "longB")):
            assert time.monotonic() < deadline, (d.status("longA"), d.status("longB"))
            time.sleep(0.05)
        a, b = d.status("longA")["worker"], d.status("longB")["worker"]
        assert a and b and a != b
        _wait_workers(d, {a: ("busy", "longA"), b: ("busy", "longB")})  # daemon.json: rewritten every 2 s
        answer = _status_answer(osc)  # every running job is listed first, with its worker
        assert answer["running"] == 2 and {j["id"]: j["worker"] for j in answer["jobs"][:2]} == {"longA": a,
                                                                                               "longB": b}
        osc.send("/aiedit/cancel", "longA")
        assert osc.wait_end("longA", timeout=30)[0] == "/aiedit/cancelled"
        assert d.status("longB")["state"] == "running"  # the other worker's job was not touched
        answer = _status_answer(osc)
        assert answer["running"] == 1 and answer["jobs"][0]["id"] == "longB"
        assert [j["state"] for j in answer["jobs"] if j["id"] == "longA"] == ["cancelled"]
        _wait_workers(d, {a: ("idle", None), b: ("busy", "longB")})
        osc.send("/aiedit/cancel", "longB")
        assert osc.wait_end("longB", timeout=30)[0] == "/aiedit/cancelled"
    assert not (d.spool / "jobs" / "longA" / "takes").exists() or not any((d.spool / "jobs" / "longA" / "takes")
                                                                            .iterdir())


def _status_answer(osc: Listener) -> dict:
    return json.loads(osc.request("/aiedit/status", "/aiedit/status", timeout=5)[0])


def _wait_workers(d: Daemon, want: dict[str, tuple[str, str | None]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = {w["name"]: (w["state"], w["job"]) for w in (d.daemon_json() or {}).get("workers", [])}
        if got == want:
            return
        assert time.monotonic() < deadline, got
        time.sleep(0.1)


def test_a_retake_waits_for_the_worker_holding_its_stages_only_while_that_one_is_free_soon():
    pool, q = Pool(), JobQueue()
    a, b = pool.add("cpu:0@h"), pool.add("cpu:1@h")
    pool.set_state(a, "idle")
    pool.set_state(b, "idle")
    take_a, take_b = pool.chooser(a), pool.chooser(b)
    q.put("cold", "interactive", key="K")
    assert q.get(0, take_a) == "cold"  # a runs stages 1-2 of K
    q.put("retake", "interactive", key="K")
    q.put("other", "batch", key="L")
    a.progress, a.started = 0.9, time.monotonic() - 1.0  # a is nearly done: b leaves the re-take to it
    assert q.get(0, take_b) == "other"
    pool.release(a)
    assert q.get(0, take_a) == "retake"  # and a takes it
    pool.release(a)
    pool.release(b)
    # a busy for long: the re-take goes to the free worker at once (it reads the stages from the disk cache)
    q.put("cold2", "interactive", key="M")
    assert q.get(0, take_a) == "cold2"
    a.progress, a.started = 0.1, time.monotonic() - 5.0  # ~45 s to go
    q.put("retake2", "interactive", key="M")
    assert q.get(0, take_b) == "retake2"


def test_a_held_retake_is_taken_by_another_worker_after_the_hold(monkeypatch):
    pool, q = Pool(), JobQueue()
    a, b = pool.add("cpu:0@h"), pool.add("cpu:1@h")
    for s in (a, b):
        pool.set_state(s, "idle")
    q.put("cold", key="K")
    assert q.get(0, pool.chooser(a)) == "cold"
    pool.release(a)  # a is idle but (say) slow to come back for it
    q.put("retake", key="K")
    assert q.get(0, pool.chooser(b)) is None
    now = time.monotonic()
    monkeypatch.setattr("bridge.workers.pool.time.monotonic", lambda: now + HOLD_S + 1)
    assert q.get(0, pool.chooser(b)) == "retake"


def test_device_lists_and_worker_names():
    assert parse_devices("cuda:0, cuda:1") == ["cuda:0", "cuda:1"]
    assert parse_devices("cuda") == ["cuda:0"]
    assert parse_devices(None, "cpu") == ["cpu"]
    with pytest.raises(ValueError, match="'gpu0' is not a device"):
        parse_devices("cpu,gpu0")
    assert worker_names(["cpu", "cpu"], "h") == ["cpu:0@h", "cpu:1@h"]
    assert worker_names(["cuda:0", "cuda:1"], "h") == ["cuda:0@h", "cuda:1@h"]
    assert worker_names([None], "h") == ["auto@h"]
    assert worker_names(["cpu"], "h") == ["cpu@h"]
    assert worker_names(["cuda"], "h") == ["cuda:0@h"]


def _serve(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    """``aiedit serve`` with Ray made unimportable (as on a machine without the cluster extra)."""
    code = "import sys; sys.modules['ray'] = None; from bridge.commands.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, "serve", "--model", "tiny", "--port", "0",
                           "--spool", str(tmp_path / "spool"), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_serve_help_lists_devices_and_ray_and_bad_values_fail_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bridge", "serve", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert "--devices LIST" in out and "--ray ADDRESS|local" in out
    r = _serve(tmp_path, "--ray", "local")
    assert r.returncode == 2
    assert r.stderr.strip() == ("aiedit serve: --ray needs Ray on this machine and on every node: "
                                "pip install 'aiedit[cluster]'")
    r = _serve(tmp_path, "--devices", "cpu,tpu")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "aiedit serve: --devices: 'tpu' is not a device (cpu, cuda, cuda:N, mps; or all)"]


def test_a_requeued_job_goes_first_in_its_priority_and_a_worker_may_choose_among_the_queued():
    q = JobQueue()
    q.put("i1")
    q.put("b1", "batch")
    q.put("b0", "batch", front=True)  # a batch job whose worker died: before the other batch jobs, after interactive
    assert q.order() == ["i1", "b0", "b1"]
    assert q.get(0, lambda queued: queued[2][0]) == "b1"
    assert q.get(0, lambda queued: None) is None and q.order() == ["i1", "b0"]
