"""Regression tests for "daemon round 2" (issue #20): each reproduces one finding of the third attack run against
the real daemon (``python -m bridge serve --model tiny``), over real UDP on 127.0.0.1 and a real spool, and asserts
it no longer works. Numbers in the test names follow the issue's items."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from bridge_helpers import ROOT, TINY_STEPS, Daemon, Listener, bundle, job, make_wav, osc, seed_queued_jobs

TOK = "s3cret-0123456789abcdef"  # the daemon refuses tokens under 16 characters

LONG = {"embed": 20000, "tune": 20000, "sample": 4}




def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as every other JSON reader does."""
    def bad(name: str):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=bad)


def wait_running(d: Daemon, jid: str, timeout: float = 90.0, *, loaded: bool = False) -> None:
    """Until job ``jid`` runs (with ``loaded``: until the model is loaded and its edit has begun)."""
    deadline = time.monotonic() + timeout
    while True:
        st = d.status(jid) or {}
        if st.get("state") == "running" and not (loaded and st.get("stage") in ("loading", "preparing")):
            return
        assert time.monotonic() < deadline, f"{jid} never started: {st}"
        time.sleep(0.05)


# -- 1. a status datagram costs what it answers, not the history ---------------------------------------------------


def test_1_status_bundle_with_a_long_queue_answers_at_once(tmp_path):
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    spool = tmp_path / "spool"
    seed_queued_jobs(spool, src, 3000, first=job("blocker", src, steps=LONG))
    with Daemon(spool, "--max-queued", "5000", start=False).start(timeout=90) as d, Listener(d.port) as lst:
        wait_running(d, "blocker", loaded=True)
        lst.send("/aiedit/job", json.dumps(job("mine", src, priority="batch")))
        lst.wait("/aiedit/ack", "mine", timeout=10)
        t0 = time.monotonic()
        lst.send_raw(bundle(*[osc("/aiedit/status")] * 16))
        deadline = t0 + 30
        while sum(a == "/aiedit/status" for a, _ in lst.events) < 16 and time.monotonic() < deadline:
            time.sleep(0.005)
        took = time.monotonic() - t0
        answers = [args[0] for a, args in lst.events if a == "/aiedit/status"]
        assert len(answers) == 16
        assert took < 2.0, f"16 status answers with 3,001 queued took {took:.1f} s"  # was 19 s at 3,000
        first = json.loads(answers[0])
        assert len(answers[0].encode()) <= 65_000
        assert first["running"] == 1 and first["queued"] == 3001 and first["more"] is True
        listed = [j["id"] for j in first["jobs"]]
        assert listed[0] == "blocker" and listed[1:4] == ["q00000", "q00001", "q00002"]  # run order
        # finished jobs page forward with `since`, oldest first
        for i in range(3):
            lst.send("/aiedit/cancel", f"q{i:05d}")
            lst.wait("/aiedit/cancelled", f"q{i:05d}", timeout=5)
        page = json.loads(lst.request("/aiedit/status", "/aiedit/status", json.dumps({"since": 0}))[0])
        done = [j for j in page["jobs"] if j["state"] == "cancelled"]
        assert [j["id"] for j in done] == ["q00000", "q00001", "q00002"]
        since = done[1]["updated"]
        page = json.loads(lst.request("/aiedit/status", "/aiedit/status", json.dumps({"since": since}))[0])
        assert [j["id"] for j in page["jobs"] if j["state"] == "cancelled"] == ["q00002"]
        assert lst.ping(timeout=2)


def test_1_status_floods_are_refused_as_busy_not_silently(tmp_path):
    with Daemon(tmp_path / "spool") as d, Listener(d.port) as lst:
        for _ in range(10):
            lst.send_raw(bundle(*[osc("/aiedit/status")] * 16))
        deadline = time.monotonic() + 10
        while len(lst.events) < 160 and time.monotonic() < deadline:
            time.sleep(0.02)
        kinds = [a if a == "/aiedit/status" else args[1] for a, args in lst.events]
        assert len(kinds) == 160  # every request answered
        busy = [k for k in kinds if k.startswith("busy:")]
        assert busy and kinds.count("/aiedit/status") >= 40 and len(busy) + kinds.count("/aiedit/status") == 160


# -- 2. limits hold for the file the worker reads -----------------------------------------------------------------


def test_2_source_grown_after_the_ack_fails_the_job_with_the_numbers(tmp_path):
    small = make_wav(tmp_path / "small.wav", seconds=0.5, sr=8000, channels=1)
    src = tmp_path / "src.wav"
    os.link(small, src)
    blocker = make_wav(tmp_path / "b.wav", seconds=0.5)
    args = ("--max-seconds", "1", "--max-channels", "2", "--max-output-mb", "1")
    with Daemon(tmp_path / "spool", *args) as d, Listener(d.port) as lst:
        lst.send("/aiedit/job", json.dumps(job("blocker", blocker, steps=LONG, etas=[0.5])))
        wait_running(d, "blocker")
        lst.send("/aiedit/job", json.dumps(job("grown", src, etas=[0.5])))
        lst.wait("/aiedit/ack", "grown", timeout=5)
        big = make_wav(tmp_path / "big.wav", seconds=6.0, sr=8000, channels=6)
        os.replace(big, src)  # replaced after the ack, before the job starts
        lst.send("/aiedit/cancel", "blocker")
        end, eargs = lst.wait_end("grown", timeout=90)
        assert end == "/aiedit/error", eargs
        assert "changed after the job was accepted" in eargs[1] and "6.0 s" in eargs[1] and "--max-seconds" in eargs[1]
        st = d.status("grown")
        assert st["state"] == "failed" and st["takes"] == []
        assert not (d.spool / "jobs" / "grown" / "takes").exists()


# -- 3. a non-finite score loses nothing --------------------------------------------------------------------------


def test_3_extreme_float_source_keeps_its_edit_with_null_scores(tmp_path):
    rng = np.random.default_rng(3)
    x = np.clip(rng.standard_normal((8000, 1)), -1, 1) * 3.0e38  # near float32's largest value
    src = tmp_path / "loud.wav"
    sf.write(src, x.astype(np.float32), 16000, subtype="FLOAT")
    d = Daemon(tmp_path / "spool")
    try:
        with Listener(d.port) as lst:
            lst.send("/aiedit/job", json.dumps(job("loud", src, etas=[0.5])))
            end, args = lst.wait_end("loud", timeout=120)
            assert end == "/aiedit/done", args
            event = strict_json(args[1])  # valid JSON: no NaN
            disk = strict_json((d.spool / "jobs" / "loud" / "status.json").read_text())
            assert disk == event and disk["state"] == "done"
            for take in disk["takes"]:
                assert take["scores"] is None or all(v is None or np.isfinite(v) for v in take["scores"].values())
                audio, _ = sf.read(take["path"], dtype="float32")
                assert np.all(np.isfinite(audio))
        d.stop()
        d.start()
        assert d.status("loud")["state"] == "done"
        assert all(os.path.exists(t["path"]) for t in d.status("loud")["takes"])  # a restart keeps the takes
    finally:
        d.stop()


# -- 4. one bad record in jobs/ does not brick the daemon ---------------------------------------------------------


def _record(spool: Path, jid: str, status: str | None, job_text: str | None = None) -> None:
    d = spool / "jobs" / jid
    d.mkdir(parents=True)
    if status is not None:
        (d / "status.json").write_text(status)
    if job_text is not None:
        (d / "job.json").write_text(job_text)


def test_4_hostile_records_at_start_become_failed_placeholders(tmp_path):
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    spool = tmp_path / "spool"
    good = job("ok1", src)
    base = {"version": 1, "state": "queued", "stage": "queued", "progress": 0.0, "error": None, "takes": [],
            "created": time.time(), "updated": time.time()}
    _record(spool, "deep", "[" * 200_000 + "]" * 200_000)
    _record(spool, "created", json.dumps({**base, "id": "created", "created": [1]}),
            json.dumps(good | {"id": "created"}))
    huge_eta = json.dumps(good | {"id": "eta"})[:-1] + ', "etas": [' + "9" * 400 + "]}"
    _record(spool, "eta", json.dumps({**base, "id": "eta"}), huge_eta)
    _record(spool, "yesterday", json.dumps({**base, "id": "yesterday", "state": "done", "updated": "yesterday"}))
    _record(spool, "nostate", json.dumps({k: v for k, v in {**base, "id": "nostate"}.items() if k != "state"}))
    _record(spool, "deepjob", json.dumps({**base, "id": "deepjob"}), "[" * 200_000 + "]" * 200_000)
    _record(spool, "ok1", json.dumps({**base, "id": "ok1", "state": "done", "stage": "done"}))
    with Daemon(spool) as d, Listener(d.port) as lst:
        for jid in ("deep", "created", "eta", "yesterday", "nostate", "deepjob"):
            st = d.status(jid)
            assert st["state"] == "failed", (jid, st)
        assert "cannot resume" in d.status("eta")["error"] and "cannot resume" in d.status("deepjob")["error"]
        assert d.status("ok1")["state"] == "done"
        listing = lst.status()
        assert {"deep", "yesterday", "nostate", "ok1"} <= {j["id"] for j in listing}
        assert "already finished (failed)" in lst.request("/aiedit/cancel", "/aiedit/error", "nostate")[1]
        lst.send("/aiedit/job", json.dumps(job("after", src)))
        assert lst.wait_end("after", timeout=90)[0] == "/aiedit/done"


# -- 5. the token: not on the command line, guesses throttled -----------------------------------------------------


def _serve(spool: Path, *args: str, env: dict | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "bridge", "serve", "--model", "tiny", "--port", "0", "--spool", str(spool), *args]
    return subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def test_5_token_file_must_be_private(tmp_path):
    tf = tmp_path / "token"
    tf.write_text(TOK + "\n")
    tf.chmod(0o644)
    out = _serve(tmp_path / "spool", "--token-file", str(tf))
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "readable by others" in out.stderr and "chmod 600" in out.stderr
    out = _serve(tmp_path / "spool", "--token-file", str(tf), "--token", "x")
    assert out.returncode == 2 and "not both" in out.stderr


def test_5_token_from_file_or_environment_and_guesses_are_throttled(tmp_path):
    tf = tmp_path / "token"
    tf.write_text(TOK + "\n")
    tf.chmod(0o600)
    with Daemon(tmp_path / "spool", "--token-file", str(tf)) as d, Listener(d.port) as lst:
        assert TOK not in Path(f"/proc/{d.proc.pid}/cmdline").read_text()
        assert lst.ping(token=TOK)["pid"] == d.proc.pid
        for i in range(30):  # a guesser, each try from the same host
            lst.send_raw(bundle(*[osc("/aiedit/ping", f"guess{i}-{k}") for k in range(16)]))
        time.sleep(0.5)
        busy = lst.request("/aiedit/ping", "/aiedit/error", TOK, timeout=5)  # even the right token, for now
        assert busy[1].startswith("busy: too many wrong tokens")
        lst.send("/aiedit/job", json.dumps(job("j", "/x.wav", token=TOK)))
        assert lst.wait("/aiedit/error", "j", timeout=5)[1].startswith("busy:")
        pongs = [json.loads(a[0]) for e, a in lst.events if e == "/aiedit/pong"]
        assert all("pid" not in p for p in pongs[1:])  # no guess got through
        log = (d.spool / "aiedit.log").read_text()
        assert "wrong token from 127.0.0.1" in log and "throttling 127.0.0.1" in log
        assert log.count("wrong token from") < 100  # logged, but rate-limited
    with Daemon(tmp_path / "spool2", env={"AIEDIT_TOKEN": "envtok-0123456789abcdef"}) as d, Listener(d.port) as lst:
        assert lst.ping(token="envtok-0123456789abcdef")["pid"] == d.proc.pid
        assert "pid" not in lst.ping()
    with Daemon(tmp_path / "spool3", "--token", "flagtok-0123456789abcdef") as d:
        assert "visible to every user" in d.stderr()


# -- 6. a bounded queue, a pruned spool ----------------------------------------------------------------------------


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_6_queue_cap_refuses_as_busy_and_unknown_fields_are_dropped(tmp_path):
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    with Daemon(tmp_path / "spool", "--max-queued", "150") as d, Listener(d.port) as lst:
        lst.send("/aiedit/job", json.dumps(job("blocker", src, steps=LONG)))
        wait_running(d, "blocker", loaded=True)
        lst.ping()
        rss0 = _rss_mb(d.proc.pid)
        pad = "p" * 50_000
        for i in range(160):
            lst.send("/aiedit/job", json.dumps(job(f"pad{i}", src, priority="batch", padding=pad)))
            if i % 20 == 19:
                lst.ping(timeout=10)
        lst.ping(timeout=10)
        acks = {a[0] for e, a in lst.events if e == "/aiedit/ack"} - {"blocker"}
        busy = [a for e, a in lst.events if e == "/aiedit/error" and a[1].startswith("busy:")]
        assert len(acks) == 150 and len(busy) == 10
        assert "--max-queued" in busy[0][1] and busy[0][0] == "pad150"
        assert not (d.spool / "jobs" / "pad150").exists()  # a busy refusal writes nothing
        grown = _rss_mb(d.proc.pid) - rss0
        assert grown < 5, f"150 queued jobs padded with 50 KB each grew the daemon by {grown:.1f} MB"


def test_6_finished_jobs_older_than_keep_days_are_pruned_at_start(tmp_path):
    spool = tmp_path / "spool"
    now = time.time()
    for jid, age_days, state in (("old", 30, "done"), ("oldfail", 9, "failed"), ("recent", 1, "done"),
                                 ("oldqueued", 30, "queued")):
        st = {"version": 1, "id": jid, "state": state, "stage": state, "progress": 1.0, "error": None,
              "takes": [], "created": now - age_days * 86400, "updated": now - age_days * 86400}
        _record(spool, jid, json.dumps(st), json.dumps(job(jid, "/nonexistent.wav")))
    (spool / "jobs" / "old" / "takes").mkdir()
    (spool / "jobs" / "old" / "takes" / "eta0.50.wav").write_bytes(b"RIFF")
    rejected = spool / "inbox" / "rejected"
    rejected.mkdir(parents=True)
    (rejected / "x.json").write_text("{")
    os.utime(rejected / "x.json", (now - 30 * 86400, now - 30 * 86400))
    (rejected / "y.json").write_text("{")
    with Daemon(spool, "--keep-days", "7") as d:
        deadline = time.monotonic() + 10  # pruned by the main loop right after start, rejected/ last
        while ((rejected / "x.json").exists() or (spool / "jobs" / "old").exists()) and time.monotonic() < deadline:
            time.sleep(0.05)
        names = {p.name for p in (spool / "jobs").iterdir()}
        assert "old" not in names and "oldfail" not in names
        assert {"recent", "oldqueued"} <= names  # recent, or not finished (this one fails: no source)
        assert not (rejected / "x.json").exists() and (rejected / "y.json").exists()
        with Listener(d.port) as lst:
            assert "old" not in {j["id"] for j in lst.status()}
        assert "older than 7 days" in (spool / "aiedit.log").read_text()


# -- 7. huge numbers are refused in one line ----------------------------------------------------------------------


def test_7_huge_numbers_are_refused_with_one_line(tmp_path):
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    big = "9" * 400
    cases = {
        "start": f'"source": {{"path": "{src}", "start": 1e305}}',
        "length": f'"source": {{"path": "{src}", "length": 1e305}}',
        "eta": f'"etas": [{big}]',
        "seed": f'"seed": {big}',
        "guid": f'"guidance": {big}',
        "steps": f'"steps": {{"embed": {big}}}',
        "inpaint": '"inpaint": {"start": 1e305, "end": 1e306}',
        "start2": f'"source": {{"path": "{src}", "start": {big}}}',
    }
    with Daemon(tmp_path / "spool") as d, Listener(d.port) as lst:
        for jid, field in cases.items():
            base = {k: v for k, v in job(jid, src).items()}
            text = json.dumps(base)[:-1] + ", " + field + "}"
            lst.send("/aiedit/job", text)
            msg = lst.wait("/aiedit/error", jid, timeout=5)[1]
            assert "internal error" not in msg and "\n" not in msg and len(msg) < 300, (jid, msg)
            assert d.status(jid)["state"] == "failed", jid
        assert "Traceback" not in (d.spool / "aiedit.log").read_text()


# -- 8. a transient write failure is caught up -------------------------------------------------------------------


def test_8_status_written_after_a_transient_spool_fault_and_cancel_survives_restart(tmp_path):
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    d = Daemon(tmp_path / "spool")
    try:
        with Listener(d.port) as lst:
            lst.send("/aiedit/job", json.dumps(job("blocker", src, steps=LONG)))
            wait_running(d, "blocker")
            lst.send("/aiedit/job", json.dumps(job("victim", src)))
            lst.wait("/aiedit/ack", "victim", timeout=5)
            jobs = d.spool / "jobs"
            os.rename(jobs / "victim", jobs / ".victim-away")  # the folder cannot be written: a fault
            (jobs / "victim").write_text("not a folder")
            lst.send("/aiedit/cancel", "victim")
            lst.wait("/aiedit/cancelled", "victim", timeout=5)
            time.sleep(1.5)
            assert json.loads((jobs / ".victim-away" / "status.json").read_text())["state"] == "queued"
            (jobs / "victim").unlink()  # the fault clears
            os.rename(jobs / ".victim-away", jobs / "victim")
            deadline = time.monotonic() + 5
            while d.status("victim")["state"] != "cancelled":
                assert time.monotonic() < deadline, "status.json never caught up with the cancel"
                time.sleep(0.05)
            assert "cannot write status of victim" in (d.spool / "aiedit.log").read_text()
        d.kill()
        d.start()
        time.sleep(1.0)
        assert d.status("victim")["state"] == "cancelled"  # not resumed
        log = (d.spool / "aiedit.log").read_text()
        assert log.count("accepted job victim") == 1 and "resumed" not in log and "job victim done" not in log
    finally:
        d.stop()


# -- 9. the low ones -----------------------------------------------------------------------------------------------


def test_9_planted_log_link_is_neither_followed_nor_chmodded(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("mine\n")
    outside.chmod(0o644)
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    (spool / "aiedit.log").symlink_to(outside)
    with Daemon(spool):
        pass
    assert outside.read_text() == "mine\n" and outside.stat().st_mode & 0o777 == 0o644
    log = spool / "aiedit.log"
    assert not log.is_symlink() and log.is_file() and log.stat().st_mode & 0o777 == 0o600
    assert "aiedit serving" in log.read_text()


def test_9_deleting_daemon_lock_does_not_let_a_second_daemon_serve(tmp_path):
    with Daemon(tmp_path / "spool") as d:
        (d.spool / "daemon.lock").unlink()
        out = _serve(d.spool)
        assert out.returncode == 2 and "another aiedit daemon" in out.stderr
        assert d.alive() and d.daemon_json()["pid"] == d.proc.pid


def test_9_terminal_escapes_from_clients_are_escaped_in_the_log(tmp_path):
    with Daemon(tmp_path / "spool") as d, Listener(d.port) as lst:
        lst.send("/aiedit/job", json.dumps(job("esc", "/tmp/\x1b]0;pwned\x07\x1b[2J.wav", label="\x1b[31mred")))
        lst.wait("/aiedit/error", "esc", timeout=5)
        lst.send("/aiedit/job", json.dumps(job("esc\x1b[2J", "/x.wav")))
        lst.wait("/aiedit/error", timeout=5)
        lst.ping()
        time.sleep(0.3)
        text = (d.spool / "aiedit.log").read_text()
        assert "refused job 'esc'" in text and "\\x1b" in text
        for out in (text, d.stderr()):
            assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", out)


def test_9_sub_sample_inpaint_is_refused_before_the_ack(tmp_path):
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    with Daemon(tmp_path / "spool") as d, Listener(d.port) as lst:
        lst.send("/aiedit/job", json.dumps(job("tiny-ip", src, inpaint={"start": 0.1, "end": 0.1000001})))
        msg = lst.wait("/aiedit/error", "tiny-ip", timeout=5)[1]
        assert "shorter than one sample" in msg
        assert not any(a == "/aiedit/ack" for a, _ in lst.events_for("tiny-ip"))
        assert d.status("tiny-ip")["state"] == "failed"


def test_9_ipv6_loopback_serves_and_mixed_families_are_refused(tmp_path):
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    spool6 = tmp_path / "spool6"
    cmd = [sys.executable, "-m", "bridge", "serve", "--model", "tiny", "--port", "0", "--spool", str(spool6),
           "--host", "::1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not (spool6 / "daemon.json").exists():
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read().decode()[-500:]
            time.sleep(0.05)
        info = json.loads((spool6 / "daemon.json").read_text())
        assert info["host"] == "::1"
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(osc("/aiedit/ping"), ("::1", info["port"]))
            data, _ = s.recvfrom(65535)
            assert b"/aiedit/pong" in data
            s.sendto(osc("/aiedit/ping", "localhost", s.getsockname()[1]), ("::1", info["port"]))
            assert b"/aiedit/pong" in s.recvfrom(65535)[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        proc.stderr.close()
    with Daemon(tmp_path / "spool4") as d, Listener(d.port) as lst:
        err = lst.request("/aiedit/ping", "/aiedit/error", "::1", lst.port)
        assert "IPv6" in err[1] and "--host ::1" in err[1]
        lst.send("/aiedit/job", json.dumps(job("v6", src, reply={"host": "::1", "port": lst.port})))
        assert "IPv6" in lst.wait("/aiedit/error", "v6", timeout=5)[1]


def test_9_unparseable_inbox_file_from_the_future_is_rejected(tmp_path):
    with Daemon(tmp_path / "spool") as d:
        p = d.drop("future.json", "{not json")
        later = time.time() + 86400
        os.utime(p, (later, later))
        err = d.spool / "inbox" / "rejected" / "future.json.error.txt"
        deadline = time.monotonic() + 10
        while not err.exists():
            assert time.monotonic() < deadline, "an unparseable file with a future mtime was never rejected"
            time.sleep(0.1)
        assert "not valid JSON" in err.read_text()


def test_9_model_field_is_clipped_in_refusals(tmp_path):
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    with Daemon(tmp_path / "spool") as d, Listener(d.port) as lst:
        lst.send("/aiedit/job", json.dumps(job("m", src, model="m" * 20_000)))
        msg = lst.wait("/aiedit/error", "m", timeout=5)[1]
        assert "is not one of this engine's models" in msg and len(msg) < 300
        assert len(d.status("m")["error"]) < 300


def test_9_daemon_stdout_goes_nowhere(tmp_path):
    """libsndfile writes parser chatter to fd 1; the daemon points fd 1 at the null device."""
    spool = tmp_path / "spool"
    cmd = [sys.executable, "-m", "bridge", "serve", "--model", "tiny", "--port", "0", "--spool", str(spool)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not (spool / "daemon.json").exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        assert os.readlink(f"/proc/{proc.pid}/fd/1") == os.devnull
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        assert proc.stdout.read() == b""
        proc.stdout.close()


def test_status_answer_unit_is_bounded(tmp_path):
    """The answer never exceeds one datagram, however long its statuses."""
    from bridge.jobs.service import Service
    from bridge.jobs.spool import Spool

    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16000), 16000)
    spool = Spool(tmp_path / "s")
    spool.create()
    svc = Service(spool, model="tiny", send=lambda *a: None, max_queued=10_000)
    for i in range(400):
        _, err = svc.submit({"version": 1, "id": f"j{i}", "source": {"path": str(wav)}, "prompt": "x" * 900,
                               "label": "é" * 900, "etas": [0.5], "steps": TINY_STEPS}, None)
        assert err is None
    text = svc.status_text()
    listing = json.loads(text)
    assert len(text.encode()) <= 64_000 and listing["more"] is True and listing["queued"] == 400
    assert [j["id"] for j in listing["jobs"]] == [f"j{i}" for i in range(len(listing["jobs"]))]


def test_3_a_nan_that_reaches_the_service_is_written_as_null(tmp_path):
    """Defence in depth behind the engine's clipping: a NaN in a finished job's fields still gives a status file,
    and the /aiedit/done event carries that very file's JSON."""
    from bridge.jobs.service import Service
    from bridge.jobs.spool import Spool

    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16000), 16000)
    spool = Spool(tmp_path / "s")
    spool.create()
    sent: list = []
    svc = Service(spool, model="tiny", send=lambda to, addr, args: sent.append((addr, args)))
    from bridge.jobs.protocol import ReplyTo

    svc.submit({"version": 1, "id": "n1", "source": {"path": str(wav)}, "prompt": "x", "etas": [0.5]},
               ReplyTo("127.0.0.1", 9))
    assert svc.next_job(0.1) is not None
    svc.finish("n1", "done", takes=[{"eta": 0.5, "path": "/x.wav",
                                     "scores": {"text": float("nan"), "audio": 0.5, "sum": float("nan")}}])
    disk = strict_json((spool.job_dir("n1") / "status.json").read_text())
    assert disk["state"] == "done" and disk["takes"][0]["scores"] == {"text": None, "audio": 0.5, "sum": None}
    done = [args for addr, args in sent if addr == "/aiedit/done"]
    assert done and strict_json(done[0][1]) == disk


def test_6_a_spool_job_waits_in_the_inbox_while_the_queue_is_full(tmp_path):
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    with Daemon(tmp_path / "spool", "--max-queued", "1") as d, Listener(d.port) as lst:
        lst.send("/aiedit/job", json.dumps(job("blocker", src, steps=LONG)))
        wait_running(d, "blocker")
        lst.send("/aiedit/job", json.dumps(job("waiting", src)))
        lst.wait("/aiedit/ack", "waiting", timeout=5)
        inbox_file = d.drop("later.json", json.dumps(job("later", src)))
        time.sleep(2.5)  # two inbox scans
        assert inbox_file.exists() and d.status("later") is None  # not refused, not lost: waiting for room
        assert not (d.spool / "inbox" / "rejected" / "later.json").exists()
        lst.send("/aiedit/cancel", "waiting")
        assert d.wait_status("later", ("queued", "running"), timeout=10)["id"] == "later"
        assert not inbox_file.exists()


# -- review finding 12: a flood of refused jobs does not grow jobs/ at its own rate --------------------------------


def test_refused_osc_jobs_are_recorded_within_a_budget_and_spool_refusals_always(tmp_path):
    from bridge.jobs.admission import REFUSALS_RECORDED_BURST, REFUSALS_RECORDED_PER_S

    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    n = int(REFUSALS_RECORDED_BURST) * 2
    with Daemon(tmp_path / "spool") as d, Listener(d.port) as lst:
        t0 = time.monotonic()
        for i in range(n):
            lst.send("/aiedit/job", json.dumps(job(f"bad{i}", src, etas=[9.0])))  # valid id, η out of range
            if i % 50 == 49:
                time.sleep(0.01)  # below the socket's queue
        deadline = time.monotonic() + 60
        while len([a for a, args in lst.events if a == "/aiedit/error"]) < n:
            assert time.monotonic() < deadline, "a refused job went unanswered"
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
        errors = {args[0]: args[1] for a, args in lst.events if a == "/aiedit/error"}
        assert set(errors) == {f"bad{i}" for i in range(n)} and all("9" in m for m in errors.values())
        kept = [p.name for p in (d.spool / "jobs").iterdir()]
        assert len(kept) <= REFUSALS_RECORDED_BURST + REFUSALS_RECORDED_PER_S * elapsed + 1, (len(kept), elapsed)
        assert all(d.status(jid)["state"] == "failed" for jid in kept)
        # a spool client learns of a refusal only from status.json: that one is always written
        d.drop("spool-bad.json", json.dumps(job("spool-bad", src, etas=[9.0])))
        deadline = time.monotonic() + 10
        while (d.status("spool-bad") or {}).get("state") != "failed":
            assert time.monotonic() < deadline, d.status("spool-bad")
            time.sleep(0.05)
        assert lst.ping(timeout=2)
    assert "answered but not recorded" in (d.spool / "aiedit.log").read_text()
