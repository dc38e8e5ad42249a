"""Regression tests for the daemon-hardening issue (#10): each reproduces one attack against the real daemon
(``python -m bridge serve --model tiny``) over real UDP on 127.0.0.1 and asserts it no longer works."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from bridge_helpers import ROOT, Daemon, Listener, bundle, job, make_wav, osc

from bridge.jobs import safe_dir
from bridge.jobs.protocol import REPLY_HOST_MSG
from bridge.jobs.spool import Heartbeat, Spool, lock_holder
from bridge.wire.osc_codec import MAX_MESSAGES, WireError, parse_datagram
from bridge.wire.server import AMPLIFY, build_message

TOK = "s3cret-0123456789abcdef"  # the daemon refuses tokens under 16 characters

HANG_BUNDLE = bytes.fromhex("2362756e646c65000000000000000001fffffffc")




@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("harden")
    src = make_wav(root / "src.wav", seconds=0.5)
    with Daemon(root / "spool") as d, Listener(d.port) as lst:
        yield d, lst, src, root


def quick_ping(lst: Listener, timeout: float = 1.0) -> float:
    t0 = time.monotonic()
    lst.ping(timeout=timeout)
    return time.monotonic() - t0


# -- 1. hostile bundles ---------------------------------------------------------------------------------------


def test_negative_bundle_element_size_does_not_hang(env):
    d, lst, _, _ = env
    lst.send_raw(HANG_BUNDLE)
    assert quick_ping(lst) < 1.0
    nested = osc("/aiedit/ping")
    for _ in range(40):  # nesting far beyond the cap
        nested = bundle(nested)
    hostile = [
        bundle(osc("/aiedit/ping"), sizes=[0]),
        bundle(osc("/aiedit/ping"), sizes=[1 << 30]),
        bundle(osc("/aiedit/ping"), sizes=[-(1 << 31)]),
        bundle(osc("/aiedit/ping"), sizes=[6]),
        nested,
        bundle(*[osc("/aiedit/ping")] * (MAX_MESSAGES + 1)),
        b"/aiedit/job\x00,b\x00\x00\xff\xff\xff\xfc",  # blob of size -4
        b"/aiedit/job\x00,b\x00\x00\x7f\xff\xff\xff",  # blob larger than the datagram
    ]
    with Listener(d.port) as other:
        for h in hostile:
            other.send_raw(h)
        assert quick_ping(other) < 1.0
        time.sleep(0.2)
        assert [a for a, _ in other.events] == ["/aiedit/pong"]  # none of the hostile pings was answered
    assert d.alive()


def test_parser_bounds_unit():
    with pytest.raises(WireError, match="-4"):
        parse_datagram(HANG_BUNDLE)
    assert [m.address for m in parse_datagram(bundle(osc("/aiedit/ping"), osc("/aiedit/status")))] == [
        "/aiedit/ping", "/aiedit/status"]
    assert parse_datagram(osc("/aiedit/job", "x", 3, 1.5, b"ab", True)) [0].args == ("x", 3, 1.5, b"ab", True)


def test_heartbeat_follows_the_answering_thread(env, tmp_path):
    d, lst, _, _ = env
    lst.send_raw(HANG_BUNDLE)
    first = d.daemon_json()["heartbeat"]
    deadline = time.monotonic() + 6
    while d.daemon_json()["heartbeat"] == first and time.monotonic() < deadline:
        time.sleep(0.1)
    assert d.daemon_json()["heartbeat"] > first  # still beating: the thread answers
    spool = Spool(tmp_path / "s")
    spool.create()
    alive = [False]
    hb = Heartbeat(spool, lambda: {"pid": 1}, lambda: alive[0])
    assert hb.beat() is None and not spool.daemon_file.exists()  # a hung answering thread: no beat
    alive[0] = True
    assert hb.beat() is not None and json.loads(spool.daemon_file.read_text())["pid"] == 1


# -- 2. reflection and amplification --------------------------------------------------------------------------

ELSEWHERE = "192.0.2.7"  # TEST-NET-1: never the sender


def reply_bytes(events) -> int:
    return sum(len(build_message(a, list(args))) for a, args in events)


def test_replies_only_to_the_senders_host(env):
    d, lst, src, _ = env
    with Listener(d.port) as other:
        assert REPLY_HOST_MSG in lst.request("/aiedit/status", "/aiedit/error", ELSEWHERE, 9)[1]
        assert REPLY_HOST_MSG in lst.request("/aiedit/ping", "/aiedit/error", ELSEWHERE, 9)[1]
        lst.send("/aiedit/ping", "127.0.0.1", other.port)  # another port on the sender's host is fine
        other.wait("/aiedit/pong", timeout=2)
        lst.send("/aiedit/job", json.dumps(job("far", src, reply={"host": ELSEWHERE, "port": 9})))
        assert lst.wait("/aiedit/error", "far", timeout=5)[1] == REPLY_HOST_MSG
        assert d.status("far")["state"] == "failed"
        lst.send("/aiedit/cancel", json.dumps({"id": "far", "reply": {"host": ELSEWHERE, "port": 9}}))
        time.sleep(0.3)
        assert [a for a in lst.events_for("far") if a[1][1] == REPLY_HOST_MSG][1:]
        d.drop("far-spool.json", json.dumps(job("far2", src, reply={"host": ELSEWHERE, "port": 9})))
        assert d.wait_status("far2", timeout=10)["error"] == REPLY_HOST_MSG


def test_messages_per_bundle_are_bounded(env):
    d, _, _, _ = env
    with Listener(d.port) as a:
        a.send_raw(bundle(*[osc("/aiedit/ping")] * MAX_MESSAGES))
        deadline = time.monotonic() + 3
        while len(a.events) < MAX_MESSAGES and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(a.events) == MAX_MESSAGES
        a.send_raw(bundle(*[osc("/aiedit/ping")] * (MAX_MESSAGES + 1)))
        time.sleep(0.5)
        assert len(a.events) == MAX_MESSAGES  # the whole datagram is refused


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    root = tmp_path_factory.mktemp("token")
    src = make_wav(root / "src.wav", seconds=0.5)
    with Daemon(root / "spool", "--token", TOK) as d, Listener(d.port) as lst:
        lst.send("/aiedit/job", json.dumps(job("private", src, token=TOK, prompt="secret prompt")))
        lst.wait("/aiedit/ack", "private", timeout=5)
        yield d, lst, src


def test_status_needs_the_token_and_replies_stay_small(tok):
    d, _, _ = tok
    with Listener(d.port) as a:
        req = osc("/aiedit/status")
        a.send_raw(req)
        a.send_raw(osc("/aiedit/ping"))
        time.sleep(0.5)
        assert ("/aiedit/error", ["", "refused: status needs the token"]) in a.events
        assert ("/aiedit/pong", [json.dumps({"version": 1, "token_required": True})]) in a.events
        assert "secret prompt" not in json.dumps(a.events)
        for ev in a.events:
            assert len(build_message(ev[0], list(ev[1]))) <= AMPLIFY * len(req)
        a.events.clear()
        many = bundle(*[osc("/aiedit/status")] * MAX_MESSAGES)
        a.send_raw(many)
        a.send_raw(osc("/aiedit/job", json.dumps({"id": "x" * 60, "version": 1})))  # no token: tiny error
        a.send_raw(osc("/aiedit/cancel", "private"))
        time.sleep(0.5)
        assert a.events and reply_bytes(a.events) <= AMPLIFY * (len(many) + 200)
        assert d.status("private")["state"] != "cancelled"
        listing = a.status(token=TOK)  # with the token: the full listing
        assert any(j["prompt"] == "secret prompt" for j in listing)
        assert a.ping(token=TOK)["pid"] == d.proc.pid


# -- 3. one daemon per spool ----------------------------------------------------------------------------------


def test_two_daemons_started_together_only_one_serves(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    assert not lock_holder(spool)
    cmd = [sys.executable, "-m", "bridge", "serve", "--model", "tiny", "--port", "0", "--spool", str(spool)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for _ in range(2)]
    try:
        deadline = time.monotonic() + 20
        while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        loser = next(p for p in procs if p.poll() is not None)
        winner = next(p for p in procs if p is not loser)
        assert loser.returncode == 2
        err = loser.stderr.read().decode()
        assert err.count("\n") == 1 and "another aiedit daemon" in err and "daemon.lock" in err
        assert winner.poll() is None and lock_holder(spool)
        winner.send_signal(signal.SIGTERM)
        winner.wait(20)
        assert not lock_holder(spool)  # released with the process
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stderr.close()


# -- 4/5. every refusal answered in one line, before queueing, with no empty folder ----------------------------


def no_empty_job_dirs(d: Daemon) -> None:
    for p in (d.spool / "jobs").iterdir():
        assert p.is_symlink() or (p / "status.json").is_file(), f"{p.name} has no status.json"


def test_refusals_are_one_line_and_leave_no_empty_folder(env):
    d, lst, src, _ = env
    text = json.dumps(job("inf-field", src))[:-1] + ', "extra": 1e400}'
    err = lst.request("/aiedit/job", "/aiedit/error", text)
    assert "out of range" in err[1] and "\n" not in err[1]
    assert not (d.spool / "jobs" / "inf-field").exists()
    cases = {
        "longpath": ("/" + "a/" * 2100 + "x.wav", "too long"),
        "longname": ("/tmp/" + "n" * 300 + ".wav", "over 255 bytes"),
        "trailing": (str(src) + "/", "separator"),
    }
    for jid, (path, word) in cases.items():
        lst.send("/aiedit/job", json.dumps(job(jid, path)))
        msg = lst.wait("/aiedit/error", jid, timeout=5)[1]
        assert word in msg and "\n" not in msg and len(msg) < 400
        assert d.status(jid)["state"] == "failed" and d.status(jid)["error"] == msg
        assert not any(a == "/aiedit/ack" for a, _ in lst.events_for(jid))  # refused before queueing
    no_empty_job_dirs(d)
    assert lst.ping()


# -- 7. no blocking open on the answering thread ---------------------------------------------------------------


def test_fifo_source_does_not_block(env):
    _, lst, _, root = env
    fifo = root / "pipe.wav"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    lst.send("/aiedit/job", json.dumps(job("fifo", fifo)))
    msg = lst.wait("/aiedit/error", "fifo", timeout=3)[1]
    assert time.monotonic() - t0 < 1.0 and "no readable audio file" in msg
    assert quick_ping(lst) < 1.0


# -- 8. links planted in the spool ----------------------------------------------------------------------------

LONG = {"embed": 20000, "tune": 20000, "sample": 4}


def test_spool_links_cannot_redirect_writes(env, tmp_path):
    d, lst, src, _ = env
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    jobs = d.spool / "jobs"
    (jobs / "dangling").symlink_to(tmp_path / "nowhere")
    lst.send("/aiedit/job", json.dumps(job("dangling", src)))
    assert "already taken" in lst.wait("/aiedit/error", "dangling", timeout=5)[1]
    assert not (tmp_path / "nowhere").exists()
    lst.send("/aiedit/job", json.dumps(job("blocker", src, steps=LONG)))
    lst.send("/aiedit/job", json.dumps(job("victim", src)))
    lst.wait("/aiedit/ack", "victim", timeout=5)
    (jobs / "victim" / "takes").symlink_to(outside)  # a spool writer plants links while the job waits
    (jobs / "victim" / "status.json").unlink()
    (jobs / "victim" / "status.json").symlink_to(outside / "keep.txt")
    lst.send("/aiedit/cancel", "blocker")
    end, _ = lst.wait_end("victim", timeout=90)
    assert end == "/aiedit/error"
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
    assert (outside / "keep.txt").read_text() == "mine"
    st = d.status("victim")
    assert st["state"] == "failed" and st["takes"] == []
    assert not (jobs / "victim" / "status.json").is_symlink()  # replaced, never followed
    assert quick_ping(lst) < 1.0


# -- 9. crash while writing, duplicate spool files -------------------------------------------------------------


def test_duplicate_spool_file_gets_an_error_file(env):
    d, _, src, _ = env
    body = json.dumps(job("dup-src", src))
    d.drop("first.json", body)
    d.wait_status("dup-src", timeout=60)
    d.drop("second.json", body)  # identical copy, dropped after the job was accepted
    err = d.spool / "inbox" / "rejected" / "second.json.error.txt"
    deadline = time.monotonic() + 10
    while not err.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "already taken" in err.read_text()


def test_kill_during_writing_withdraws_published_takes(tmp_path):
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    d = Daemon(tmp_path / "spool")
    try:
        with Listener(d.port) as lst:
            lst.send("/aiedit/job", json.dumps(job("k9", src, steps=LONG)))
            lst.wait("/aiedit/ack", "k9", timeout=5)
            deadline = time.monotonic() + 60
            while d.status("k9")["state"] != "running" and time.monotonic() < deadline:
                time.sleep(0.05)
        d.kill()
        takes = d.spool / "jobs" / "k9" / "takes"  # what a kill between publishing and the status leaves
        takes.mkdir(exist_ok=True)
        (takes / "eta0.30.wav").write_bytes(b"RIFF" + b"\0" * 1000)
        (takes / ".partial-x.wav").write_bytes(b"RIFF")
        d.start()
        st = d.status("k9")
        assert st["state"] == "failed" and st["takes"] == [] and not takes.exists()
    finally:
        d.stop()


# -- 10. privacy -----------------------------------------------------------------------------------------------


def test_spool_and_takes_are_private_and_errors_do_not_probe_paths(env):
    d, lst, src, root = env
    for sub in ("", "jobs", "inbox", "inbox/rejected"):
        assert (d.spool / sub).stat().st_mode & 0o777 == 0o700, sub
    lst.send("/aiedit/job", json.dumps(job("priv", src)))
    assert lst.wait_end("priv", timeout=90)[0] == "/aiedit/done"
    for t in d.status("priv")["takes"]:
        assert os.stat(t["path"]).st_mode & 0o777 == 0o600
    assert (d.spool / "jobs" / "priv" / "status.json").stat().st_mode & 0o777 == 0o600
    (root / "notes.wav").write_text("private words")
    lst.send("/aiedit/job", json.dumps(job("probe1", root / "notes.wav")))
    lst.send("/aiedit/job", json.dumps(job("probe2", root / "missing.wav")))
    a = lst.wait("/aiedit/error", "probe1", timeout=5)[1].replace("notes.wav", "X")
    b = lst.wait("/aiedit/error", "probe2", timeout=5)[1].replace("missing.wav", "X")
    assert a == b  # an existing non-audio file and a missing one read the same


# -- 6. bounded work per job ----------------------------------------------------------------------------------


def test_work_limits_refuse_up_front_with_the_numbers(env, tmp_path):
    _, lst, _, _ = env
    slow = make_wav(tmp_path / "slow.wav", seconds=600, sr=1, channels=1)  # 600 frames at 1 Hz = 600 s
    lst.send("/aiedit/job", json.dumps(job("slow", slow)))
    msg = lst.wait("/aiedit/error", "slow", timeout=5)[1]
    assert "600.0 s" in msg and "120 s" in msg and "--max-seconds" in msg
    wide = make_wav(tmp_path / "wide.wav", seconds=0.2, channels=12)
    lst.send("/aiedit/job", json.dumps(job("wide", wide)))
    assert "12 channels" in lst.wait("/aiedit/error", "wide", timeout=5)[1]


def test_size_estimate_limit(tmp_path):
    src = make_wav(tmp_path / "src.wav", seconds=1.0, channels=2)
    with Daemon(tmp_path / "spool", "--max-output-mb", "2", "--max-seconds", "5") as d, Listener(d.port) as lst:
        lst.send("/aiedit/job", json.dumps(job("big", src, etas=[0.1 * i for i in range(8)])))
        msg = lst.wait("/aiedit/error", "big", timeout=5)[1]
        assert "about 3 MB" in msg and "8 takes" in msg and "--max-output-mb" in msg
        assert d.status("big")["state"] == "failed"
        lst.send("/aiedit/job", json.dumps(job("small", src, etas=[0.3])))
        assert lst.wait("/aiedit/ack", "small", timeout=5)


# -- 11. logged garbage ---------------------------------------------------------------------------------------


def test_garbage_floods_do_not_flood_the_log(tmp_path):
    with Daemon(tmp_path / "spool", "-v") as d, Listener(d.port) as lst:
        log_file = d.spool / "aiedit.log"
        before = log_file.stat().st_size
        tags = b"/aiedit/job\x00," + b"q" * 60_000 + b"\x00\x00\x00"  # unknown type tags
        for _ in range(20):
            lst.send_raw(tags)
        for i in range(1500):
            lst.send_raw(osc("/aiedit/job", "not json " + "z" * 2000))
            lst.send_raw(osc(f"/other/{i}", 1))
            if i % 300 == 0:
                time.sleep(0.05)  # let the daemon keep up (a dropped datagram proves nothing)
        assert quick_ping(lst, timeout=5) < 5
        time.sleep(0.3)
        grown = log_file.stat().st_size - before
        assert grown < 60_000, f"the log grew by {grown} bytes"
        text = log_file.read_text()
        assert "similar line(s) dropped" in text or grown < 20_000
        assert max(len(line) for line in text.splitlines()) < 800
        assert len(d.stderr()) < 200_000


def test_source_swapped_to_a_fifo_never_blocks(tmp_path):
    wav = make_wav(tmp_path / "real.wav", seconds=0.5)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "src.wav"
    link.symlink_to(wav)
    stop = threading.Event()

    def swap() -> None:  # repoint the source between a real file and a FIFO, atomically, as fast as possible
        i = 0
        while not stop.is_set():
            tmp = tmp_path / f".link{i % 2}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(fifo if i % 2 else wav)
            os.replace(tmp, link)
            i += 1

    # --max-seconds below the clip: every job is refused right after its probe, so none reaches the worker
    with Daemon(tmp_path / "spool", "--max-seconds", "0.1") as d, Listener(d.port) as lst:
        th = threading.Thread(target=swap, daemon=True)
        th.start()
        try:
            for i in range(300):
                lst.send("/aiedit/job", json.dumps(job(f"sw{i}", link)))
                if i % 25 == 24:
                    assert quick_ping(lst, timeout=2) < 2
        finally:
            stop.set()
            th.join()
        assert quick_ping(lst, timeout=2) < 2
        errors = [a for a, _ in lst.events if a == "/aiedit/error"]
        assert len(errors) == 300 and not any(a == "/aiedit/ack" for a, _ in lst.events)


def test_source_swapped_to_a_fifo_after_acceptance_fails_the_job(env, tmp_path):
    _, lst, src, _ = env
    link = tmp_path / "later.wav"
    link.symlink_to(src)
    lst.send("/aiedit/job", json.dumps(job("blocker2", src, steps=LONG)))
    lst.send("/aiedit/job", json.dumps(job("swapped", link)))
    lst.wait("/aiedit/ack", "swapped", timeout=5)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link.unlink()
    link.symlink_to(fifo)  # accepted as a file, a FIFO by the time the worker reads it
    lst.send("/aiedit/cancel", "blocker2")
    end, args = lst.wait_end("swapped", timeout=60)
    assert end == "/aiedit/error" and "no readable audio file" in args[1]
    lst.send("/aiedit/job", json.dumps(job("after-swap", src)))
    assert lst.wait_end("after-swap", timeout=90)[0] == "/aiedit/done"  # the worker was not left blocked


def test_aiedit_send_passes_the_token_to_status_and_ping(tok):
    d, _, _ = tok
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "bridge", "send", "--port", str(d.port), "--timeout", "5"]
    out = subprocess.run([*base, "--token", TOK, "status", "--json"], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=30)
    assert out.returncode == 0 and "secret prompt" in out.stdout
    out = subprocess.run([*base, "status"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=30)
    assert out.returncode != 0 and "needs the token" in out.stderr
    out = subprocess.run([*base, "--token", TOK, "ping"], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=30)
    assert out.returncode == 0 and json.loads(out.stdout)["pid"] == d.proc.pid


@pytest.mark.parametrize("use_fd", [True, False])
def test_safe_dir_refuses_planted_links(tmp_path, monkeypatch, use_fd):
    """Both backends: descriptors (POSIX) and the checked-path fallback (systems without ``dir_fd``)."""
    monkeypatch.setattr(safe_dir, "HAVE_DIR_FD", use_fd and safe_dir.HAVE_DIR_FD)
    outside = tmp_path / "outside"
    outside.mkdir()
    spool = Spool(tmp_path / "spool")
    spool.create()
    spool.create_job("a", {"id": "a"}, {"id": "a", "state": "queued"})
    assert json.loads((spool.job_dir("a") / "status.json").read_text())["state"] == "queued"
    (spool.jobs / "b").symlink_to(outside)
    with pytest.raises(FileExistsError):
        spool.create_job("b", {"id": "b"}, {"id": "b"})
    with pytest.raises(OSError):
        spool.write_status({"id": "b", "state": "failed"})
    (spool.job_dir("a") / "takes").symlink_to(outside)
    with pytest.raises(OSError):
        spool.write_partial_take("a", lambda fh: fh.write(b"RIFF"))
    spool.remove_takes("a")  # removes the link, not what it points to
    assert not (spool.job_dir("a") / "takes").exists() and outside.is_dir()
    name = spool.write_partial_take("a", lambda fh: fh.write(b"RIFF"))
    spool.publish_takes("a", [(name, "eta0.30.wav")])
    take = spool.takes_dir("a") / "eta0.30.wav"
    assert take.read_bytes() == b"RIFF" and take.stat().st_mode & 0o777 == 0o600
    assert list(outside.iterdir()) == []
