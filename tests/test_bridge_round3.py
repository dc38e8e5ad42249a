"""Regression tests for "daemon round 3" (issue #26): each reproduces one finding of the fourth attack run (on
6a0127c) against the real daemon (``python -m bridge serve --model tiny``), over real UDP on 127.0.0.1 and a real
spool, and asserts it no longer works. Numbers in the test names follow the issue's findings.

Nothing here is timed: a "burns a core" check reads the daemon's CPU time (``/proc/<pid>/stat``) over a window and
asserts a generous bound; orderings and counts are asserted, never latencies.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bridge_helpers import ROOT, Daemon, Listener, bundle, job, make_wav, osc

from benchmarks.bench_bridge import heavy_wav

LONG = {"embed": 20000, "tune": 20000, "sample": 4}
TOKEN = "round3-token-0123456789abcdef"




def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cores_used(pids: list[int], window_s: float = 2.0) -> float:
    """Average cores the processes used together over ``window_s`` seconds."""
    before = sum(cpu_s(p) for p in pids)
    time.sleep(window_s)
    return (sum(cpu_s(p) for p in pids) - before) / window_s


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        time.sleep(0.05)


def wait_running(d: Daemon, jid: str, timeout: float = 90.0) -> None:
    wait_for(lambda: (d.status(jid) or {}).get("stage") in ("embedding", "finetune"), timeout, f"{jid} running")


# -- 1. the daemon never answers itself, nor an answer -------------------------------------------------------------


def test_1_replies_aimed_at_the_daemons_own_port_are_refused_and_it_stays_idle(tmp_path):
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    with Daemon(tmp_path / "spool") as d, Listener(d.port) as lst:
        own = d.port
        lst.send("/aiedit/ping", "127.0.0.1", own)
        lst.send("/aiedit/ping", "127.0.0.2", own)
        lst.send("/aiedit/status", "localhost", own)
        lst.send("/aiedit/status", json.dumps({"reply": {"host": "127.0.0.1", "port": own}}))
        lst.send("/aiedit/job", json.dumps(job("selfish", src, reply={"host": "127.0.0.1", "port": own})))
        lst.send("/aiedit/cancel", json.dumps({"id": "nobody", "reply": {"host": "127.0.0.1", "port": own}}))
        d.drop("selfish-spool.json", json.dumps(job("selfish2", src, reply={"host": "127.0.0.1", "port": own})))
        time.sleep(1.0)  # let whatever loop there is start
        used = cores_used([d.proc.pid])
        assert used < 0.15, f"the daemon used {used:.2f} cores after datagrams aimed at its own port"
        errors = [args for a, args in lst.events if a == "/aiedit/error"]
        assert sum("own port" in e[1] for e in errors) == 6, errors  # each refused to its sender, in one line
        assert not any(a == "/aiedit/ack" for a, _ in lst.events)
        assert d.status("selfish")["state"] == "failed"
        err = d.spool / "inbox" / "rejected" / "selfish-spool.json.error.txt"
        assert "own port" in wait_for(lambda: err.exists() and err.read_text(), what="the inbox refusal")
        assert lst.ping(timeout=2)["pid"] == d.proc.pid


def test_1_two_daemons_never_answer_each_others_answers(tmp_path):
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    with Daemon(tmp_path / "a") as a, Daemon(tmp_path / "b") as b, Listener(a.port) as lst:
        lst.send("/aiedit/ping", "127.0.0.1", b.port)  # a's pong goes to b: b must not answer it
        lst.send("/aiedit/status", "127.0.0.1", b.port)  # a's status answer looks like a status request
        lst.send("/aiedit/job", json.dumps(job("via-b", src, etas=[9.0], reply={"host": "127.0.0.1",
                                                                            "port": b.port})))
        lst.send_raw(bundle(osc("/aiedit/ack", "x"), osc("/aiedit/done", "x", "{}"), osc("/aiedit/cancelled", "x"),
                            osc("/aiedit/progress", "x", "sampling", 0.5), osc("/aiedit/error", "x", "boom"),
                            osc("/aiedit/status", json.dumps({"jobs": [], "running": 0, "queued": 0}))))
        time.sleep(1.0)
        used = cores_used([a.proc.pid, b.proc.pid])
        assert used < 0.15, f"two daemons used {used:.2f} cores answering each other"
        assert lst.events == []  # answers (ack, done, error, ...) are never answered, not even "unknown address"
        assert lst.ping(timeout=2)["pid"] == a.proc.pid


def test_1_with_a_token_a_reply_to_the_own_port_is_refused_too(tmp_path):
    tf = tmp_path / "token"
    tf.write_text(TOKEN)
    tf.chmod(0o600)
    with Daemon(tmp_path / "spool", "--token-file", str(tf)) as d, Listener(d.port) as lst:
        lst.send("/aiedit/ping", "127.0.0.1", d.port, TOKEN)
        lst.send("/aiedit/status", "127.0.0.1", d.port, TOKEN)
        time.sleep(1.0)
        used = cores_used([d.proc.pid])
        assert used < 0.15, f"the daemon used {used:.2f} cores"
        assert sum(a == "/aiedit/error" and "own port" in args[1] for a, args in lst.events) == 2


# -- 3. wrong tokens: throttled per host, loopback as one; short tokens refused -------------------------------------


def _serve(spool: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "bridge", "serve", "--model", "tiny", "--port", "0", "--spool", str(spool), *args]
    return subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                          capture_output=True, text=True, timeout=30)


def test_3_a_short_token_is_refused_at_start_in_one_line(tmp_path):
    tf = tmp_path / "token"
    tf.write_text("abc123\n")
    tf.chmod(0o600)
    for args, env in ((("--token", "123"), None), (("--token-file", str(tf)), None), ((), {"AIEDIT_TOKEN": "short"})):
        out = _serve(tmp_path / "spool", *args, env=env)
        assert out.returncode == 2, out.stderr
        lines = [x for x in out.stderr.splitlines() if not x.startswith("aiedit serve: warning")]
        assert len(lines) == 1 and "at least 16" in lines[0] and "secrets" in lines[0], out.stderr


def test_3_wrong_tokens_from_many_loopback_addresses_share_one_throttle(tmp_path):
    tf = tmp_path / "token"
    tf.write_text(TOKEN)
    tf.chmod(0o600)
    with Daemon(tmp_path / "spool", "--token-file", str(tf)) as d, Listener(d.port) as lst:
        socks = []
        try:
            for k in range(2, 42):  # one guess from each of 40 loopback addresses; a compared guess is answered
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # (a pong) at our listener, a refused one
                socks.append(s)  # ("busy") at the guessing socket itself
                s.bind((f"127.0.0.{k}", 0))
                s.settimeout(5)
                s.sendto(osc("/aiedit/ping", "127.0.0.1", lst.port, f"guess-{k:03d}"), ("127.0.0.1", d.port))
            busy = 0
            for s in socks:
                with contextlib.suppress(TimeoutError):
                    s.settimeout(0.2)
                    busy += b"busy: too many wrong tokens" in s.recv(65535)
        finally:
            for s in socks:
                s.close()
        lst.ping(timeout=5)
        compared = [args for a, args in lst.events if a == "/aiedit/pong"]
        assert len(compared) <= 7 and busy >= 33, (len(compared), busy)  # 5 free tries, then one every 2 s
        assert all("pid" not in json.loads(p[0]) for p in compared)
        busy = lst.request("/aiedit/ping", "/aiedit/error", TOKEN)  # 127.0.0.1 is the same host: throttled too
        assert busy[1].startswith("busy: too many wrong tokens")


# -- 17. the status throttle is per host, not global; tokenless answers do not amplify towards others --------------


def _own_lan_address() -> str | None:
    """This machine's address on its first non-loopback interface (no packet is sent), or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.123", 9))
            host = s.getsockname()[0]
    except OSError:
        return None
    return None if host.startswith("127.") or host == "0.0.0.0" else host


def test_17_a_status_flood_from_one_host_does_not_refuse_another_host(tmp_path):
    lan = _own_lan_address()
    if lan is None:
        pytest.skip("no non-loopback address on this machine to send from")
    tf = tmp_path / "token"
    tf.write_text(TOKEN)
    tf.chmod(0o600)
    with Daemon(tmp_path / "spool", "--host", "0.0.0.0", "--token-file", str(tf)) as d:
        flood = bundle(*[osc("/aiedit/status", TOKEN)] * 16)
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for s in socks:
                s.bind(("127.0.0.1", 0))
            other.bind((lan, 0))
            other.settimeout(5)
            for _ in range(2):  # 16 ports x 2 datagrams x 16 requests = 512 status requests from this host,
                for s in socks:
                    s.sendto(flood, ("127.0.0.1", d.port))
            other.sendto(osc("/aiedit/status", TOKEN), (lan, d.port))  # then one from another host
            data = other.recv(65535)
            assert data.startswith(b"/aiedit/status\x00"), data[:120]  # answered, not "busy"
            answers = []
            for s in socks:
                s.settimeout(0.5)
                with contextlib.suppress(TimeoutError):
                    while True:
                        answers.append(s.recv(65535))
            assert sum(b"busy: too many status requests" in a for a in answers) >= 256  # the flooder was refused
        finally:
            for s in [*socks, other]:
                s.close()


def test_17_a_tokenless_status_answer_to_another_port_is_cut_to_four_times_the_request(tmp_path):
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    with Daemon(tmp_path / "spool") as d, Listener(d.port) as lst, Listener(d.port) as victim:
        for i in range(40):  # refused with a valid id: 40 finished (failed) jobs for the status answer to list
            lst.send("/aiedit/job", json.dumps(job(f"f{i:02d}", src, etas=[9.0], label="x" * 500)))
        wait_for(lambda: sum(a == "/aiedit/error" for a, _ in lst.events) >= 40, what="40 refusals")
        own = json.loads(lst.request("/aiedit/status", "/aiedit/status")[0])  # to the sender itself: all of it
        assert len(own["jobs"]) == 40
        req = osc("/aiedit/status", "127.0.0.1", victim.port)
        lst.send_raw(req)
        answer = victim.wait("/aiedit/status", timeout=5)
        from bridge.wire.server import AMPLIFY, build_message

        assert len(build_message("/aiedit/status", answer)) <= AMPLIFY * len(req)
        cut = json.loads(answer[0])
        assert cut["more"] is True and cut["jobs"] == []
        lst.send_raw(osc("/aiedit/ping", "127.0.0.1", victim.port))
        pong = json.loads(victim.wait("/aiedit/pong", timeout=5)[0])
        assert pong == {"version": 1, "short": True}


# -- 2. a record that names another id fails alone; the worker lives on --------------------------------------------


def _queued_record(spool: Path, folder: str, body: dict, created: float) -> None:
    d = spool / "jobs" / folder
    d.mkdir(parents=True)
    (d / "job.json").write_text(json.dumps(body))
    st = {"version": 1, "id": folder, "label": None, "state": "queued", "stage": "queued", "progress": 0.0,
          "error": None, "priority": "interactive", "prompt": body["prompt"], "mode": "lora", "model": "tiny",
          "seed": 1, "source": {"path": body["source"]["path"], "start": 0.0, "length": None}, "sample_rate": 44100,
          "channels": 2, "frames": 22050, "takes": [], "best": None, "created": created, "updated": created}
    (d / "status.json").write_text(json.dumps(st))


def test_2_a_queued_record_naming_another_id_fails_alone_and_later_jobs_run(tmp_path):
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    spool = tmp_path / "spool"
    now = time.time() - 100
    _queued_record(spool, "liar", job("someone-else", src), now)  # job.json names another id
    _queued_record(spool, "after", job("after", src), now + 1)
    with Daemon(spool) as d, Listener(d.port) as lst:
        st = d.status("liar")
        assert st["state"] == "failed" and "cannot resume" in st["error"] and "another id" in st["error"]
        assert d.wait_status("after", timeout=120)["state"] == "done"  # the worker did not die on the first
        lst.send("/aiedit/job", json.dumps(job("new", src)))
        assert lst.wait_end("new", timeout=120)[0] == "/aiedit/done"
        assert d.status("someone-else") is None
        assert "Traceback" not in d.stderr()


# -- 14. job creation is atomic: a kill -9 mid-creation loses nothing ---------------------------------------------


def test_14_a_job_folder_cut_short_by_a_kill_does_not_take_its_id_from_its_inbox_file(tmp_path):
    """What a kill -9 between ``mkdir jobs/<id>`` and its first write left (an empty folder; or job.json alone,
    between the two writes), with the job's inbox file still waiting: the job is accepted and runs at restart."""
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    spool = tmp_path / "spool"
    (spool / "jobs" / "cut1").mkdir(parents=True)
    (spool / "jobs" / "cut2").mkdir()
    (spool / "jobs" / "cut2" / "job.json").write_text(json.dumps(job("cut2", src)))
    (spool / "jobs" / ".new-0123abcd").mkdir()  # a hidden half-made folder of this daemon's own creation
    (spool / "jobs" / ".new-0123abcd" / "job.json").write_text(json.dumps(job("cut3", src)))
    inbox = spool / "inbox"
    inbox.mkdir()
    for jid in ("cut1", "cut2"):
        (inbox / f"{jid}.json").write_text(json.dumps(job(jid, src)))
    with Daemon(spool) as d:
        for jid in ("cut1", "cut2"):
            assert d.wait_status(jid, timeout=120)["state"] == "done", d.status(jid)
        assert not list((spool / "inbox" / "rejected").glob("*"))  # nothing refused as "already taken"
        assert not (spool / "jobs" / ".new-0123abcd").exists()


def test_14_jobs_created_under_kill_9_are_whole_or_absent(tmp_path):
    """Kill the daemon repeatedly while it accepts spool jobs: every job folder it leaves has its status, and
    every inbox file becomes a job (none refused as taken by its own folder)."""
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    spool = tmp_path / "spool"
    d = Daemon(spool, "--max-queued", "5000")
    try:
        for round_ in range(3):
            for i in range(60):
                d.drop(f"k{round_}-{i:02d}.json", json.dumps(job(f"k{round_}-{i:02d}", src, steps=LONG,
                                                                 priority="batch")))
            time.sleep(0.3 * (round_ + 1))
            d.kill()
            for folder in (spool / "jobs").iterdir():
                assert folder.name.startswith(".new-") or (folder / "status.json").exists(), folder
            d.start()
        wait_for(lambda: not list((spool / "inbox").glob("*.json")), 60, "the inbox drained")
        names = {f"k{r}-{i:02d}" for r in range(3) for i in range(60)}
        assert names <= {p.name for p in (spool / "jobs").iterdir()}
        assert not list((spool / "inbox" / "rejected").glob("*"))
    finally:
        d.stop()


# -- 4. history bounded by count and bytes; job.json keeps the protocol's fields only -----------------------------


def test_4_job_json_keeps_only_the_protocols_fields_nested_ones_included(tmp_path):
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    with Daemon(tmp_path / "spool") as d, Listener(d.port) as lst:
        lst.send("/aiedit/job", json.dumps(job("blocker", src, steps=LONG)))
        wait_running(d, "blocker")
        body = job("padded", src, priority="batch", padding="p" * 20_000, steps={**LONG, "pad": "s" * 10_000},
                   source={"path": str(src), "pad": "q" * 20_000})
        lst.send("/aiedit/job", json.dumps(body))
        lst.wait("/aiedit/ack", "padded", timeout=10)
        kept = d.spool / "jobs" / "padded" / "job.json"
        assert kept.stat().st_size < 1000, kept.stat().st_size
        assert json.loads(kept.read_text()) == {k: v for k, v in body.items() if k != "padding"} | {
            "steps": LONG, "source": {"path": str(src)}}


def test_4_submit_then_cancel_cannot_grow_the_history_past_its_bound(tmp_path):
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    with Daemon(tmp_path / "spool", "--max-history", "30") as d, Listener(d.port) as lst:
        lst.send("/aiedit/job", json.dumps(job("blocker", src, steps=LONG)))
        wait_running(d, "blocker")
        for i in range(120):
            lst.send("/aiedit/job", json.dumps(job(f"c{i:03d}", src, priority="batch")))
            lst.send("/aiedit/cancel", f"c{i:03d}")
            if i % 20 == 19:
                lst.ping(timeout=10)
        wait_for(lambda: sum(a == "/aiedit/cancelled" for a, _ in lst.events) == 120, what="120 cancels")
        folders = lambda: [p.name for p in (d.spool / "jobs").iterdir()]  # noqa: E731
        wait_for(lambda: len(folders()) <= 31, what="the history trimmed to 30 finished jobs (+ the running one)")
        assert "blocker" in folders() and "c119" in folders() and "c000" not in folders()  # the oldest went
        listed = [j["id"] for j in lst.status() if j["state"] == "cancelled"]
        assert len(listed) <= 30 and "c000" not in listed
        assert "past the history bound" in (d.spool / "aiedit.log").read_text()


# -- 5. a per-sender job budget; the probe is off the answering thread ---------------------------------------------



def test_5_probing_slow_files_does_not_hold_up_another_clients_answers(tmp_path):
    heavy = heavy_wav(tmp_path / "heavy.wav")
    with Daemon(tmp_path / "spool") as d, Listener(d.port) as lst, Listener(d.port) as other:
        lst.send_raw(bundle(*[osc("/aiedit/job", json.dumps(job(f"h{i:02d}", heavy))) for i in range(16)]))
        other.send("/aiedit/ping")  # right behind the 16 probes, from another client
        other.wait("/aiedit/pong", timeout=30)
        wait_for(lambda: len(lst.arrival_times("/aiedit/error")) + len(lst.arrival_times("/aiedit/ack")) == 16,
                 30, "16 answers")
        answers = {**lst.arrival_times("/aiedit/error"), **lst.arrival_times("/aiedit/ack")}
        pong = min(other.arrival_times("/aiedit/pong").values())
        before = sum(t < pong for t in answers.values())
        assert before <= 8, f"the ping was answered after {before} of the 16 probes"  # not behind them all
        own = lst.request("/aiedit/ping", "/aiedit/pong")  # the same client's own answers stay in order
        assert own


def test_5_each_sender_has_a_job_budget(tmp_path):
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    with Daemon(tmp_path / "spool", "--max-queued", "5000") as d, Listener(d.port) as lst:
        lst.send("/aiedit/job", json.dumps(job("blocker", src, steps=LONG)))
        wait_running(d, "blocker")
        from bridge.jobs.admission import JOB_BURST, JOB_RATE

        t0 = time.monotonic()
        for i in range(400):
            lst.send("/aiedit/job", json.dumps(job(f"b{i:03d}", src, priority="batch")))
            if i % 20 == 19:
                lst.ping(timeout=30)  # answered after this client's earlier jobs: paces the sending
        lst.ping(timeout=30)
        elapsed = time.monotonic() - t0
        acks = {a[0] for e, a in lst.events if e == "/aiedit/ack"} - {"blocker"}
        busy = [a for e, a in lst.events if e == "/aiedit/error" and a[1].startswith("busy: too many jobs from")]
        assert len(acks) + len(busy) == 400, (len(acks), len(busy))
        assert JOB_BURST - 10 <= len(acks) <= JOB_BURST + JOB_RATE * elapsed + 5, (len(acks), elapsed)
        assert not any((d.spool / "jobs" / a[0]).exists() for a in busy)  # a refusal over budget writes nothing


# -- 11. at --max-queued, freed places are shared: an OSC sender that retries fastest cannot take them all ---------


def test_11_a_spool_job_gets_a_freed_place_while_an_osc_sender_floods(tmp_path):
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    with Daemon(tmp_path / "spool", "--max-queued", "3") as d, Listener(d.port) as lst:
        lst.send("/aiedit/job", json.dumps(job("blocker", src, steps=LONG)))
        wait_running(d, "blocker")
        for i in range(3):
            lst.send("/aiedit/job", json.dumps(job(f"q{i}", src, priority="batch")))
            lst.wait("/aiedit/ack", f"q{i}", timeout=10)
        d.drop("reaper.json", json.dumps(job("reaper", src, priority="batch")))
        time.sleep(1.5)  # the inbox has seen it, and it waits
        assert d.status("reaper") is None
        flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flooder.bind(("127.0.0.1", 0))
        flooder.setblocking(False)
        got_in, i = [], 0
        try:
            for freed in range(3):
                lst.send("/aiedit/cancel", f"q{freed}")  # a place frees; the flooder retries every ~2 ms
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline and d.status("reaper") is None:
                    flooder.sendto(osc("/aiedit/job", json.dumps(job(f"f{i:05d}", src, priority="batch"))),
                                   ("127.0.0.1", d.port))
                    i += 1
                    with contextlib.suppress(BlockingIOError):
                        while True:
                            data = flooder.recv(65535)
                            if data.startswith(b"/aiedit/ack"):
                                got_in.append(data)
                    time.sleep(0.002)
                if d.status("reaper") is not None:
                    break
        finally:
            flooder.close()
        assert d.status("reaper") is not None, f"the spool job never got a freed place ({len(got_in)} went to OSC)"
        # the daemon writes the job's status, then removes its inbox file (a crash between the two is recovered):
        # the file must go, a moment after the status shows
        gone = time.monotonic() + 5
        while (d.spool / "inbox" / "reaper.json").exists() and time.monotonic() < gone:
            time.sleep(0.02)
        assert not (d.spool / "inbox" / "reaper.json").exists()


# -- 12. inbox files waiting for room are not read again and again -------------------------------------------------


def read_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def test_12_inbox_files_waiting_for_room_are_not_read_every_second(tmp_path):
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    with Daemon(tmp_path / "spool", "--max-queued", "1") as d, Listener(d.port) as lst:
        lst.send("/aiedit/job", json.dumps(job("blocker", src, steps=LONG)))
        wait_running(d, "blocker")
        lst.send("/aiedit/job", json.dumps(job("queued", src, priority="batch")))
        lst.wait("/aiedit/ack", "queued", timeout=10)
        inbox = d.spool / "inbox"
        start, landed = read_bytes(d.proc.pid), 0
        for i in range(3000):
            tmp = inbox / f".w{i:04d}.tmp"
            landed += tmp.write_text(json.dumps(job(f"w{i:04d}", src, priority="batch", label="x" * 200)))
            os.replace(tmp, inbox / f"w{i:04d}.json")
        # they are read once as they land: wait until every byte of them was read and a second passes quietly (a
        # quiet second alone can be a loaded machine starving the inbox thread half way through)
        last = read_bytes(d.proc.pid)
        for _ in range(90):
            time.sleep(1.0)
            now = read_bytes(d.proc.pid)
            if now - start >= landed and now - last < 20_000:
                break
            last = now
        before = read_bytes(d.proc.pid)
        time.sleep(3)
        read = read_bytes(d.proc.pid) - before
        assert read < 200_000, f"the daemon read {read} bytes in 3 s with 3,000 inbox files waiting"  # was ~3 MB
        lst.send("/aiedit/cancel", "queued")  # a place frees: the oldest waiting file takes it
        assert d.wait_status("w0000", ("queued",), timeout=20)["id"] == "w0000"
        assert d.status("w0001") is None and (inbox / "w0001.json").exists()


# -- 16. a full spool disk: said in one line, and the heartbeat keeps telling the truth ----------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB file system of its own (tmpfs; needs root), unmounted afterwards."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small file system here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(mnt: Path) -> Path:
    filler = mnt / "filler"
    with open(filler, "wb") as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 65536)
            fh.flush()
    return filler


def test_16_a_full_spool_disk_keeps_the_heartbeat_fresh_and_refuses_jobs_in_one_line(tmp_path, small_disk):
    src = make_wav(tmp_path / "src.wav", seconds=0.5)
    with Daemon(small_disk / "spool") as d, Listener(d.port) as lst:
        filler = fill(small_disk)
        beat = d.daemon_json()["heartbeat"]
        fresh = wait_for(lambda: (d.daemon_json() or {}).get("heartbeat", 0) > beat + 3 and d.daemon_json(), 15,
                         "a heartbeat written on the full disk")
        assert "disk is full" in fresh.get("problem", ""), fresh  # written in place, and says why
        lst.send("/aiedit/job", json.dumps(job("full", src)))
        msg = lst.wait("/aiedit/error", "full", timeout=10)[1]
        assert msg.startswith("busy: the spool's disk is full") and "\n" not in msg
        assert "disk is full" in d.daemon_json().get("problem", "")
        assert lst.ping(timeout=5)["pid"] == d.proc.pid
        filler.unlink()  # space again: jobs are taken, the problem is gone
        lst.send("/aiedit/job", json.dumps(job("room", src)))
        lst.wait("/aiedit/ack", "room", timeout=10)
        wait_for(lambda: "problem" not in (d.daemon_json() or {"problem": 1}), 10, "the problem cleared")
