"""A bounded, seeded fuzz run against the real daemon over real UDP and a real spool (issue #10).

Ten batches of ~330 cases each: random and mutated datagrams, bundles with hostile sizes and nesting, hostile
job JSON (some of it valid, so real jobs run), and hostile inbox files (garbage, FIFOs, links, folders, huge
files). After every batch the daemon must: answer a ping within 100 ms (best of three, once the batch's
datagrams are drained), grow its RSS by less than ``RSS_BOUND_MB`` since warm-up, have changed no file outside
the spool, have run no job twice, and have every job it knows in a terminal state. Same seed, same cases: the
files the cases name live under a folder whose path has a fixed length (the truncation and mutation points of a
case depend on its length, so a pytest tmp path that grew a digit used to change the cases). A fuzzed job that the
daemon accepts with the model's default stage steps (``"steps": null``, or a ``steps`` object with none of the
three keys) is valid but runs the paper's 500 + 1500 steps, minutes on a CPU: the fuzzer cancels it right after
sending it, and it must end cancelled. Every other job must still end on its own.

A second run (issue #20) adds the classes the first lacked: hostile records in ``jobs/`` at start, status floods
while a long queue waits, sources swapped after the ack, and non-finite audio.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import struct
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from bridge_helpers import Daemon, Listener, bundle, job, make_wav, osc, seed_queued_jobs

from bridge.jobs.protocol import decode_json, parse_job

SEED = 20261123
BATCHES = 10
DATAGRAMS_PER_BATCH = 300
FILES_PER_BATCH = 30
RSS_BOUND_MB = 120  # after the model is loaded; the tiny model's edits allocate and free a few MB
PING_BOUND_S = 0.100
FINAL = ("done", "failed", "cancelled")
TINY = {"embed": 1, "tune": 1, "sample": 2}




def _default_steps(text: str) -> bool:
    """Whether the real parser accepts ``text`` and leaves a stage's step count to the model's default."""
    try:
        p = parse_job(decode_json(text)).request.params
    except Exception:  # refused (or worse): the daemon's business, not a long job
        return False
    return None in (p.embed_steps, p.tune_steps, p.sample_steps)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def snapshot(root: Path, spool: Path) -> dict[str, str]:
    """Every file under ``root`` except the spool: content hash (or link target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath).resolve() == spool.resolve():
            dirnames[:] = []
            continue
        for name in filenames:
            p = Path(dirpath) / name
            if p.name.endswith(".stderr"):
                continue  # the daemon's own stderr capture
            if p.is_symlink():
                out[str(p)] = "link:" + os.readlink(p)
            elif p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


class Fuzzer:
    def __init__(self, rng: random.Random, src: Path, outside: Path) -> None:
        self.rng, self.src, self.outside = rng, src, outside
        self.n = 0
        self.valid_ids: list[str] = []
        self.unbounded_ids: list[str] = []  # accepted with default stage steps: the test cancels them
        self.to_cancel: list[str] = []  # of those, the ones not cancelled yet

    def new_id(self) -> str:
        self.n += 1
        return f"fz{self.n}"

    # -- JSON --------------------------------------------------------------------------------------------------

    def value(self, depth: int = 0):
        r = self.rng
        kind = r.randrange(12 if depth < 3 else 8)
        return [
            lambda: None, lambda: r.choice([True, False]), lambda: r.randint(-2**40, 2**40),
            lambda: r.uniform(-1e6, 1e6), lambda: "".join(chr(r.randrange(32, 0x2FF)) for _ in range(r.randrange(12))),
            lambda: r.choice(["", "/", "../../etc/passwd", str(self.outside / "keep.txt"), "x" * 5000, "\u00e9\u4e2d"]),
            lambda: r.choice([0, -1, 65536, 1.5, 1e308]), lambda: r.choice([0.3, 0.5, 1.0]),
            lambda: [self.value(depth + 1) for _ in range(r.randrange(4))],
            lambda: {r.choice(["path", "start", "length", "host", "port", "embed", "x"]): self.value(depth + 1)
                     for _ in range(r.randrange(4))},
            lambda: [self.value(depth + 1)] * r.randrange(20),
            lambda: {"path": str(self.src), "start": r.choice([0, 0.1, -1, 99]), "length": self.value(depth + 1)},
        ][kind]()

    def job_text(self, intact: bool = True) -> str:
        """Job JSON, mostly hostile; one in ten is valid (and recorded as such when sent ``intact``)."""
        r = self.rng
        jid = self.new_id()
        kind = r.randrange(10)
        if kind == 0:  # a valid job: it really runs
            if intact:
                self.valid_ids.append(jid)
            return json.dumps(job(jid, self.src, steps=TINY, etas=[0.4], priority=r.choice(["batch", "interactive"])))
        d = job(jid, self.src, steps=TINY)
        for _ in range(r.randrange(1, 4)):
            keys = [*d, "reply", "inpaint", "mode", "token", "label", "guidance", "zz"]
            d[r.choice(keys)] = self.value()
        text = json.dumps(d)
        if intact and kind >= 6 and _default_steps(text):
            self.unbounded_ids.append(jid)
            self.to_cancel.append(jid)
        if kind == 1:
            text = text[:-1] + ', "big": 1e400}'
        elif kind == 2:
            text = text[:-1] + ', "nest": ' + "[" * r.randrange(10, 3000) + "]" * 5 + "}"
        elif kind == 3:
            text = text.replace('"prompt"', '"prompt": "\\ud800", "p2"')
        elif kind == 4:
            text = text[: r.randrange(len(text))]
        elif kind == 5:
            text = text[:-1] + ', "n": NaN}'
        return text

    # -- datagrams ---------------------------------------------------------------------------------------------

    def mutate(self, data: bytes) -> bytes:
        b = bytearray(data)
        r = self.rng
        for _ in range(r.randrange(1, 6)):
            op = r.randrange(5)
            if op == 0 and b:
                b[r.randrange(len(b))] = r.randrange(256)
            elif op == 1 and b:
                del b[r.randrange(len(b)):]
            elif op == 2:
                i = r.randrange(len(b) + 1)
                b[i:i] = bytes(r.randrange(256) for _ in range(r.randrange(1, 9)))
            elif op == 3 and len(b) >= 4:
                i = r.randrange(0, len(b) - 3)
                b[i:i + 4] = struct.pack(">i", r.choice([-4, -1, 0, 3, 1 << 30, -(1 << 31), len(b)]))
            elif op == 4:
                b += bytes(4)
        return bytes(b)

    def datagram(self) -> bytes:
        r = self.rng
        kind = r.randrange(9)
        if kind == 0:
            return bytes(r.randrange(256) for _ in range(r.randrange(0, 600)))
        if kind == 1:
            return self.mutate(osc("/aiedit/job", self.job_text(intact=False)))
        if kind == 2:
            return osc("/aiedit/job", self.job_text())
        if kind == 3:
            inner = osc(r.choice(["/aiedit/ping", "/aiedit/status", "/aiedit/cancel", "/x"]))
            for _ in range(r.randrange(0, 8)):
                inner = bundle(inner, sizes=[r.choice([len(inner), -4, 0, len(inner) + 4, 1 << 28])]
                               if r.random() < 0.3 else None)
            return inner
        if kind == 4:
            parts = [osc("/aiedit/ping") for _ in range(r.randrange(1, 40))]
            return bundle(*parts, tag=bytes(r.randrange(256) for _ in range(8)))
        if kind == 5:
            return self.mutate(bundle(osc("/aiedit/status"), osc("/aiedit/cancel", "fz1")))
        if kind == 6:
            return osc("/aiedit/cancel", r.choice([f"fz{r.randrange(1, self.n + 2)}", "../x", "", 5, 1.5]))
        if kind == 7:
            addr = r.choice(["/aiedit/ping", "/aiedit/status"])
            args = r.choice([[], ["192.0.2.1", 9], ["127.0.0.1", r.randrange(-5, 70000)], ["tok"],
                             ["h", "p", "t", "x"], [b"blob"]])
            return osc(addr, *args)
        tags = "".join(r.choice("ifdhsSbTFNIcmtrq[]") for _ in range(r.randrange(1, 30)))
        return b"/aiedit/job\x00," + tags.encode() + b"\x00" * (4 - (len(tags) + 1) % 4) + bytes(
            r.randrange(256) for _ in range(r.randrange(0, 200)))

    # -- spool files -------------------------------------------------------------------------------------------

    def drop_file(self, d: Daemon, i: int) -> None:
        r = self.rng
        inbox = d.spool / "inbox"
        name = f"f{self.n}-{i}.json"
        kind = r.randrange(8)
        target = inbox / name
        if kind == 0:
            d.drop(name, bytes(r.randrange(256) for _ in range(r.randrange(0, 300))))
        elif kind == 1:
            d.drop(name, self.job_text())
        elif kind == 2:
            os.mkfifo(target)
        elif kind == 3:
            target.symlink_to(self.outside / "keep.json")  # a link to a valid-looking job outside the spool
        elif kind == 4:
            target.mkdir()
        elif kind == 5:
            d.drop(name, json.dumps({"version": 1, "op": "cancel", "id": f"fz{r.randrange(1, self.n + 2)}"}))
        elif kind == 6:
            jid = self.new_id()
            link = d.spool / "jobs" / jid
            link.symlink_to(self.outside)  # a planted job folder link, then a job with that id
            d.drop(name, json.dumps(job(jid, self.src, steps=TINY)))
        else:
            d.drop(name, b" " * (1 << 20) + b"{}")  # over the size limit


@pytest.fixture(scope="module")
def world():
    # A fixed-length path (not pytest's tmp counter, whose digits grow): see the module docstring.
    root = Path(tempfile.mkdtemp(prefix="aiedit-fuzz-", dir="/tmp"))
    try:
        yield from _world(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _world(root: Path):
    src = make_wav(root / "src.wav", seconds=0.3, channels=1, sr=16_000)
    outside = root / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("the user's file")
    (outside / "keep.json").write_text(json.dumps(job("outside-job", src)))
    with Daemon(root / "spool") as d, Listener(d.port) as lst:
        yield root, src, outside, d, lst


def test_fuzz_batches(world):
    root, src, outside, d, lst = world
    rng = random.Random(SEED)
    fz = Fuzzer(rng, src, outside)
    t_start = time.monotonic()
    lst.send("/aiedit/job", json.dumps(job("warm", src, steps=TINY, etas=[0.4])))
    assert lst.wait_end("warm", timeout=120)[0] == "/aiedit/done"  # model loaded: RSS baseline after this
    before = snapshot(root, d.spool)
    rss0 = rss_mb(d.proc.pid)
    cases = 0
    for batch in range(BATCHES):
        for i in range(DATAGRAMS_PER_BATCH):
            lst.send_raw(fz.datagram())
            send_cancels(lst, fz)  # a job sent over UDP is known as soon as its datagram is handled
            cases += 1
            if i % 50 == 49:
                time.sleep(0.01)  # stay below the socket's queue: a dropped datagram tests nothing
        for i in range(FILES_PER_BATCH):
            fz.drop_file(d, i)  # an inbox job is cancelled once the inbox is drained (check_batch)
            cases += 1
        check_batch(d, lst, fz, before, rss0, batch)
    elapsed = time.monotonic() - t_start
    assert cases >= 3000
    print(f"fuzz: {cases} cases in {elapsed:.1f} s, RSS {rss0:.0f} -> {rss_mb(d.proc.pid):.0f} MB")


def send_cancels(lst: Listener, fz: Fuzzer) -> None:
    for jid in fz.to_cancel:
        lst.send_raw(osc("/aiedit/cancel", jid))
    fz.to_cancel.clear()


def check_batch(d: Daemon, lst: Listener, fz: Fuzzer, before: dict[str, str], rss0: float, batch: int) -> None:
    lst.ping(timeout=30)  # drain: everything sent before this has been handled
    best = min(_timed_ping(lst) for _ in range(3))
    assert best < PING_BOUND_S, f"batch {batch}: ping took {best * 1000:.0f} ms"
    assert d.alive()
    # every job terminal (valid ones run; the inbox is drained)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pending = [p for p in (d.spool / "inbox").iterdir()
                   if p.name.endswith(".json") and not p.name.startswith(".") and not p.is_dir()]
        states = [(p.name, _state(p)) for p in (d.spool / "jobs").iterdir() if not p.is_symlink()]
        if not pending:
            send_cancels(lst, fz)
        if not pending and all(s in FINAL for _, s in states):
            break
        time.sleep(0.1)
    assert not pending, f"batch {batch}: inbox not drained: {pending[:5]}"
    assert all(s in FINAL for _, s in states), [x for x in states if x[1] not in FINAL][:5]
    for jid in fz.valid_ids:  # valid jobs ran (or a fuzzed cancel hit them)
        assert _state(d.spool / "jobs" / jid) in ("done", "cancelled"), jid
    for jid in fz.unbounded_ids:  # the daemon knows them (accepted or refused on a check the parser lacks), none ran
        assert _state(d.spool / "jobs" / jid) in ("cancelled", "failed"), jid
    # no job ran twice
    log = (d.spool / "aiedit.log").read_text(errors="replace")
    accepted = re.findall(r"accepted job (\S+) ", log)
    assert len(accepted) == len(set(accepted)), "a job was accepted twice"
    acks = [args[0] for a, args in lst.events if a == "/aiedit/ack"]
    assert len(acks) == len(set(acks)), "a job was acknowledged twice"
    ran = re.findall(r"job (\S+) done", log)
    assert len(ran) == len(set(ran)), "a job ran twice"
    # nothing outside the spool changed, memory bounded
    assert snapshot(d.spool.parent, d.spool) == before, f"batch {batch}: a file outside the spool changed"
    grown = rss_mb(d.proc.pid) - rss0
    assert grown < RSS_BOUND_MB, f"batch {batch}: RSS grew by {grown:.0f} MB"


def _timed_ping(lst: Listener) -> float:
    t0 = time.perf_counter()
    lst.ping(timeout=2)
    return time.perf_counter() - t0


def _state(job_dir: Path) -> str | None:
    try:
        return json.loads((job_dir / "status.json").read_text()).get("state")
    except (OSError, ValueError):
        return None


# -- round 2 (issue #20) ------------------------------------------------------------------------------------------

ROUND2_SEED = 20261202
HOSTILE_RECORDS = 60
QUEUE = 1500
STATUS_DATAGRAMS = 200
SWAPS = 16


def strict_loads(text: str):
    def bad(name: str):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=bad)


def hostile_record(fz: Fuzzer, spool: Path, jid: str) -> None:
    """A job folder as a damaged or hostile spool writer might leave it."""
    r = fz.rng
    d = spool / "jobs" / jid
    d.mkdir(parents=True)
    now = time.time()
    st = {"version": 1, "id": jid, "state": r.choice(["queued", "running", "done", "failed", "cancelled"]),
          "stage": "queued", "progress": 0.0, "error": None, "takes": [], "created": now, "updated": now}
    body = job(jid, fz.src, steps=TINY, etas=[0.4])
    kind = r.randrange(9)
    if kind == 0:
        st[r.choice(["created", "updated", "progress", "state", "stage", "takes", "id"])] = fz.value()
    elif kind == 1:
        del st[r.choice(list(st))]
    elif kind == 2:
        (d / "status.json").write_text("[" * r.randrange(1000, 100_000))
        return
    elif kind == 3:
        st["state"] = "queued"
        text = json.dumps(body)[:-1] + ", " + r.choice(['"etas": [' + "9" * 400 + "]", '"seed": ' + "9" * 400,
                                                        '"source": {"path": "' + str(fz.src) + '", "start": 1e305}',
                                                        '"nest": ' + "[" * 5000 + "]" * 5000]) + "}"
        (d / "job.json").write_text(text)
    elif kind == 4:
        (d / "status.json").write_bytes(bytes(r.randrange(256) for _ in range(r.randrange(200))))
        return
    elif kind == 5:
        (d / "status.json").mkdir()
        return
    elif kind == 6:
        (d / "status.json").symlink_to(fz.outside / "keep.txt")
        return
    elif kind == 7:
        st["updated"] = int("9" * r.randrange(20, 400))
    else:  # a sound queued job: it resumes and runs
        st["state"] = "queued"
    (d / "status.json").write_text(json.dumps(st))
    if not (d / "job.json").exists():
        (d / "job.json").write_text(json.dumps(body))


def status_datagram(r: random.Random) -> bytes:
    def one() -> bytes:
        args = r.choice([[], [json.dumps({"since": r.choice([0, time.time() - r.random() * 100, -1, 1e300])})],
                         [json.dumps({"since": r.choice(["x", None, [1]])})], ["{not json"], ["tok"]])
        return osc("/aiedit/status", *args)
    return bundle(*[one() for _ in range(r.randrange(1, 17))])


def extreme_wav(path: Path, r: random.Random) -> Path:
    x = np.clip(np.random.default_rng(r.randrange(1 << 30)).standard_normal((4000, 1)), -1, 1).astype(np.float32)
    kind = r.randrange(4)
    if kind == 0:
        x *= np.float32(3.0e38)
    elif kind == 1:
        x[::7] = np.nan
    elif kind == 2:
        x[::5] = np.inf
        x[1::5] = -np.inf
    else:
        x[:] = np.nan
    sf.write(path, x, 16_000, subtype="FLOAT")
    return path


def test_fuzz_round2_classes(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz2")
    rng = random.Random(ROUND2_SEED)
    src = make_wav(root / "src.wav", seconds=0.3, channels=1, sr=16_000)
    outside = root / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("the user's file")
    fz = Fuzzer(rng, src, outside)
    spool = root / "spool"
    # hostile records at start, and a long queue (batch) behind a long interactive blocker
    seed_queued_jobs(spool, src, QUEUE, first=job("blocker", src, steps={"embed": 20000, "tune": 20000, "sample": 2}))
    for i in range(HOSTILE_RECORDS):
        hostile_record(fz, spool, f"h{i}")
    before = snapshot(root, spool)
    with Daemon(spool, "--max-queued", "5000", start=False).start(timeout=120) as d, Listener(d.port) as lst:
        for i in range(HOSTILE_RECORDS):  # each record is readable, strict JSON, in a known state
            st = strict_loads((spool / "jobs" / f"h{i}" / "status.json").read_text())
            assert st["state"] in ("queued", "running", *FINAL), st
        # status floods from several senders while the queue is long
        senders = [Listener(d.port) for _ in range(3)]
        try:
            for i in range(STATUS_DATAGRAMS):
                rng.choice(senders).send_raw(status_datagram(rng))
                if i % 25 == 24:
                    time.sleep(0.02)
            lst.ping(timeout=30)
            best = min(_timed_ping(lst) for _ in range(3))
            assert best < PING_BOUND_S, f"ping took {best * 1000:.0f} ms after the status flood"
            for s in senders:  # every status request got an answer: a listing or a one-line error
                assert s.events and all(a in ("/aiedit/status", "/aiedit/error") for a, _ in s.events)
                for a, args in s.events:
                    if a == "/aiedit/status":
                        listing = strict_loads(args[0])
                        assert len(args[0].encode()) <= 65_000 and listing["queued"] >= QUEUE - 10
        finally:
            for s in senders:
                s.close()
        # sources swapped after the ack, and non-finite audio
        swapped: list[str] = []
        for i in range(SWAPS):
            link = root / f"swap{i}.wav"
            link.symlink_to(src)
            jid = f"sw{i}"
            lst.send("/aiedit/job", json.dumps(job(jid, link, steps=TINY, etas=[0.4])))
            lst.wait("/aiedit/ack", jid, timeout=10)
            target = rng.choice(["big", "garbage", "fifo", "missing", "extreme"])
            new = root / f"swap{i}-{target}.wav"
            if target == "big":
                make_wav(new, seconds=200.0, sr=8000, channels=1)  # over --max-seconds (120 s)
            elif target == "garbage":
                new.write_bytes(bytes(rng.randrange(256) for _ in range(2000)))
            elif target == "fifo":
                os.mkfifo(new)
            elif target == "extreme":
                extreme_wav(new, rng)
            link.unlink()
            link.symlink_to(new)
            swapped.append(jid)
        extreme = []
        for i in range(6):
            jid = f"nf{i}"
            lst.send("/aiedit/job", json.dumps(job(jid, extreme_wav(root / f"nf{i}.wav", rng), steps=TINY,
                                                   etas=[0.4, 0.7])))
            extreme.append(jid)
        for i in range(QUEUE):  # clear the long queue, then let the fuzzed jobs run
            lst.send("/aiedit/cancel", f"q{i:05d}")
            if i % 100 == 99:
                lst.ping(timeout=30)
        lst.send("/aiedit/cancel", "blocker")
        for jid in swapped + extreme:
            end, args = lst.wait_end(jid, timeout=180)
            st = strict_loads((spool / "jobs" / jid / "status.json").read_text())
            assert st["state"] in FINAL, st
            if end == "/aiedit/done":
                assert strict_loads(args[1]) == st
                for take in st["takes"]:
                    audio, _ = sf.read(take["path"], dtype="float32")
                    assert np.all(np.isfinite(audio)) and audio.shape[0] <= 120 * 16_000
            else:
                assert st["takes"] == [] and "\n" not in args[1]
        assert d.alive() and min(_timed_ping(lst) for _ in range(3)) < PING_BOUND_S
        for p in (spool / "jobs").iterdir():  # every status on disk is strict JSON
            if not p.is_symlink() and (p / "status.json").is_file() and not (p / "status.json").is_symlink():
                strict_loads((p / "status.json").read_text())
        after = snapshot(root, spool)  # files made by this test (swap targets, extreme sources) aside, none changed
        assert {k: v for k, v in after.items() if k in before} == before
        assert (outside / "keep.txt").read_text() == "the user's file"
