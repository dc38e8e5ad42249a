"""Shared helpers for tests that talk to a real ``aiedit serve`` over real UDP (no mocks).

Typical use::

    from bridge_helpers import Daemon, Listener, make_wav, job_json   # tests/ is on sys.path under pytest

    with Daemon(tmp_path / "spool") as d:              # starts `python -m bridge serve --model tiny --port 0`
        src = make_wav(tmp_path / "src.wav")           # 1 s of stereo knocks at 44.1 kHz
        with Listener(d.port) as osc:                  # a UDP socket; collects every answer in the background
            osc.send("/aiedit/job", job_json("j1", src))
            osc.wait("/aiedit/done", "j1", timeout=60)
            print(osc.events_for("j1"))                # [(address, args), ...] in arrival order

``Daemon`` learns its port from ``daemon.json`` (``--port 0``: no free-port races), and ``stop()`` sends SIGTERM
and waits. ``job()`` builds a job dict with tiny step counts (an edit takes a few seconds on a CPU).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from pythonosc.osc_message_builder import OscMessageBuilder

from bridge.wire.client import OscClient

ROOT = Path(__file__).resolve().parents[1]
TINY_STEPS = {"embed": 3, "tune": 3, "sample": 4}


def osc(address: str, *args) -> bytes:
    """One OSC message as raw bytes (for datagrams the client would never build)."""
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


def bundle(*elements: bytes, sizes: list[int] | None = None, tag: bytes = b"\0" * 7 + b"\1") -> bytes:
    """An OSC bundle of ``elements``; ``sizes`` overrides each element's size prefix and ``tag`` the time tag
    (malformed bundles for the hardening and fuzz tests)."""
    out = b"#bundle\x00" + tag
    for i, e in enumerate(elements):
        out += struct.pack(">i", sizes[i] if sizes else len(e)) + e
    return out


def free_port() -> int:
    """A UDP port free right now (prefer ``Daemon(port=0)``, which cannot race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_wav(path: Path, seconds: float = 1.0, sr: int = 44_100, channels: int = 2, subtype: str = "PCM_16",
             seed: int = 0) -> Path:
    """Synthetic knocks (decaying noise bursts) plus a quiet tone; returns ``path``."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    x = 0.05 * np.sin(2 * np.pi * 220 * t)
    for onset in np.arange(0.05, seconds, 0.25):
        i = int(onset * sr)
        m = min(n - i, int(0.08 * sr))
        x[i:i + m] += 0.6 * rng.standard_normal(m) * np.exp(-np.arange(m) / (0.015 * sr))
    data = np.stack([x * (1.0 - 0.2 * c) for c in range(channels)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(data, -1, 1), sr, subtype=subtype)
    return path


def job(job_id: str, src: Path | str, **fields: Any) -> dict[str, Any]:
    """A valid job dict (protocol v1) for audio file ``src`` with tiny step counts; ``fields`` override keys."""
    d: dict[str, Any] = {"version": 1, "id": job_id, "source": {"path": str(src)},
                         "prompt": "knocking on a wooden door", "etas": [0.3, 0.6], "seed": 1,
                         "steps": dict(TINY_STEPS)}
    d.update(fields)
    return d


def job_json(job_id: str, src: Path | str, **fields: Any) -> str:
    return json.dumps(job(job_id, src, **fields))


def seed_queued_jobs(spool: Path, src: Path, n: int, *, first: dict | None = None) -> None:
    """Write ``n`` queued jobs into a spool the way the daemon does (job.json + status.json), for it to resume
    at start: a long queue without n round trips. ``first`` (a job dict) is queued before them all."""
    jobs = spool / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    now = time.time() - 100
    entries = ([first] if first else []) + [job(f"q{i:05d}", src, priority="batch") for i in range(n)]
    for i, j in enumerate(entries):
        d = jobs / j["id"]
        d.mkdir()
        (d / "job.json").write_text(json.dumps(j))
        st = {"version": 1, "id": j["id"], "label": None, "state": "queued", "stage": "queued", "progress": 0.0,
              "error": None, "priority": j.get("priority", "interactive"), "prompt": j["prompt"], "mode": "lora",
              "model": "tiny", "seed": 1, "source": {"path": str(src), "start": 0.0, "length": None},
              "sample_rate": 44100, "channels": 2, "frames": 22050, "takes": [], "best": None,
              "created": now + i * 1e-3, "updated": now + i * 1e-3}
        (d / "status.json").write_text(json.dumps(st))


class Daemon:
    """``python -m bridge serve`` in a subprocess on a tmp spool; a context manager that stops it on exit."""

    def __init__(self, spool: Path, *args: str, model: str = "tiny", start: bool = True,
                 env: dict[str, str] | None = None, preexec: Any = None) -> None:
        self.spool = Path(spool)
        self.args = ["--model", model, "--spool", str(self.spool), *args]
        if "--port" not in args:
            self.args += ["--port", "0"]
        # One torch thread unless told otherwise: on a shared, loaded CPU, OpenMP threads spinning against other
        # processes made a tiny edit 50x slower (50 s instead of 0.8 s).
        self.env = {"OMP_NUM_THREADS": "1", **os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.preexec = preexec  # run in the child before it starts (resource limits)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.started_in = 0.0  # seconds from spawn to the first pong
        if start:
            self.start()

    def start(self, timeout: float = 20.0) -> Daemon:
        (self.spool / "daemon.json").unlink(missing_ok=True)
        self.spool.parent.mkdir(parents=True, exist_ok=True)  # the daemon makes the spool itself (0700)
        t0 = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", *self.args], cwd=ROOT,
                                     env=self.env, stdout=subprocess.DEVNULL, preexec_fn=self.preexec,
                                     stderr=open(self.spool.parent / f"{self.spool.name}.stderr", "ab"))
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}: {self.stderr()[-2000:]}")
            info = self.daemon_json()
            if info and info.get("pid") == self.proc.pid:
                self.port = int(info["port"])
                with OscClient("127.0.0.1", self.port) as c:
                    from bridge.wire.client import ping

                    if ping(c, timeout=max(0.5, timeout - (time.monotonic() - t0)), wait=True):
                        self.started_in = time.monotonic() - t0
                        return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"daemon did not answer within {timeout} s: {self.stderr()[-2000:]}")

    def daemon_json(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.spool / "daemon.json").read_text())
        except (OSError, ValueError):
            return None

    def status(self, job_id: str) -> dict[str, Any] | None:
        """``jobs/<id>/status.json`` as the daemon last wrote it, or None."""
        try:
            return json.loads((self.spool / "jobs" / job_id / "status.json").read_text())
        except (OSError, ValueError):
            return None

    def wait_status(self, job_id: str, states: tuple[str, ...] = ("done", "failed", "cancelled"),
                    timeout: float = 60.0) -> dict[str, Any]:
        """Poll status.json until its state is one of ``states`` (the spool client's view)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status(job_id)
            if st and st.get("state") in states:
                return st
            time.sleep(0.05)
        raise TimeoutError(f"job {job_id} not in {states} after {timeout} s: {self.status(job_id)}")

    def drop(self, name: str, content: str | bytes) -> Path:
        """Put a message into the inbox the way clients should: temporary name, then rename."""
        inbox = self.spool / "inbox"
        inbox.mkdir(parents=True, exist_ok=True)
        tmp = inbox / f".{name}.tmp"
        tmp.write_bytes(content.encode() if isinstance(content, str) else content)
        os.replace(tmp, inbox / name)
        return inbox / name

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal the daemon and wait for it to exit; returns its exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def kill(self) -> None:
        """SIGKILL: the daemon gets no chance to clean up (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stderr(self) -> str:
        try:
            return (self.spool.parent / f"{self.spool.name}.stderr").read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Listener:
    """A python-osc client socket that sends requests and collects every answer on a background thread.

    ``events`` is the list of (address, args) received so far; ``wait`` blocks until a matching one arrives.
    """

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.client = OscClient(host, port)
        self.events: list[tuple[str, list[Any]]] = []
        self.times: list[float] = []  # time.perf_counter() at each event's arrival
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        """Where this listener receives (use it as a job's ``reply.port``)."""
        return self.client.port

    def send(self, address: str, *args: Any) -> None:
        self.client.send(address, *args)

    def send_raw(self, data: bytes) -> None:
        self.client.send_raw(data)

    def _run(self) -> None:
        while not self._stop:
            try:
                msg = self.client.receive(0.2)
            except OSError:
                return
            if msg is not None:
                t = time.perf_counter()
                with self._cond:
                    self.events.append(msg)
                    self.times.append(t)
                    self._cond.notify_all()

    def wait(self, address: str, job_id: str | None = None, timeout: float = 60.0) -> list[Any]:
        """Args of the first event to ``address`` (for ``job_id`` if given: its first argument), else TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for a, args in self.events:
                    if a == address and (job_id is None or (args and args[0] == job_id)):
                        return args
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {address} for {job_id!r} within {timeout} s; got {self.events[-10:]}")
                self._cond.wait(left)

    def wait_end(self, job_id: str, timeout: float = 60.0) -> tuple[str, list[Any]]:
        """The job's final event: ``/aiedit/done``, ``/aiedit/error`` or ``/aiedit/cancelled``."""
        ends = ("/aiedit/done", "/aiedit/error", "/aiedit/cancelled")
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for a, args in self.events:
                    if a in ends and args and args[0] == job_id:
                        return a, args
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"job {job_id} did not end within {timeout} s; got {self.events[-10:]}")
                self._cond.wait(left)

    def arrival_times(self, address: str) -> dict[str, float]:
        """First arrival time (perf_counter) of ``address`` per job id."""
        with self._cond:
            out: dict[str, float] = {}
            for (a, args), t in zip(self.events, self.times, strict=True):
                if a == address and args:
                    out.setdefault(str(args[0]), t)
            return out

    def events_for(self, job_id: str) -> list[tuple[str, list[Any]]]:
        with self._cond:
            return [(a, args) for a, args in self.events if args and args[0] == job_id]

    def request(self, address: str, answer: str, *args: Any, timeout: float = 5.0) -> list[Any]:
        """Send ``address`` and return the args of the next ``answer`` event received after sending."""
        with self._cond:
            start = len(self.events)
        self.send(address, *args)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for a, a_args in self.events[start:]:
                    if a == answer:
                        return a_args
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {answer} within {timeout} s")
                self._cond.wait(left)

    def ping(self, timeout: float = 5.0, token: str | None = None) -> dict[str, Any]:
        args = [token] if token else []
        return json.loads(self.request("/aiedit/ping", "/aiedit/pong", *args, timeout=timeout)[0])

    def status(self, timeout: float = 5.0, token: str | None = None) -> list[dict[str, Any]]:
        args = [token] if token else []
        return json.loads(self.request("/aiedit/status", "/aiedit/status", *args, timeout=timeout)[0])["jobs"]

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=1)
        self.client.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
