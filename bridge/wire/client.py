"""``aiedit send``: talk to a running daemon over OSC, as a REAPER script would. Starts fast: no torch, no
engine.

Requests leave from one bound UDP socket and the daemon answers to the sender's address, so the answers come
back to that same socket (no ``reply`` needed).
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

from bridge.wire.osc_codec import WireError, encode_message, parse_datagram

EXIT_OK, EXIT_FAILED, EXIT_NO_ANSWER = 0, 1, 3


class OscClient:
    """One UDP socket bound to an ephemeral port: :meth:`send` requests, :meth:`receive` the answers."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9050) -> None:
        self.target = (host, port)
        if ":" in host:  # an IPv6 daemon (aiedit serve --host ::1)
            self.sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            self.sock.bind(("::1" if host == "::1" else "::", 0))
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1" if host in ("127.0.0.1", "localhost") else "0.0.0.0", 0))
        with contextlib.suppress(OSError):  # room for a burst of 64 KB status answers (the kernel caps it)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def send(self, address: str, *args: Any) -> None:
        self.sock.sendto(encode_message(address, args), self.target)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.target)

    def receive(self, timeout: float) -> tuple[str, list[Any]] | None:
        """The next OSC message (address, args) within ``timeout`` seconds, or None. Non-OSC datagrams are
        skipped."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data, _ = self.sock.recvfrom(65_535)
            except (TimeoutError, BlockingIOError):
                return None
            except ConnectionResetError:  # Windows reports ICMP port-unreachable this way
                continue
            try:
                msg = parse_datagram(data)[0]
            except (WireError, IndexError):
                continue
            return msg.address, list(msg.args)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> OscClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ping(
    client: OscClient, timeout: float = 2.0, wait: bool = False, token: str | None = None
) -> dict[str, Any] | None:
    """daemon.json's content from ``/aiedit/pong``; with ``wait``, retry every 0.5 s until ``timeout``.

    A daemon with a token answers a ping without it with ``{"version": 1, "token_required": true}`` only."""
    deadline = time.monotonic() + timeout
    while True:
        client.send("/aiedit/ping", *([token] if token else []))
        step = min(0.5, timeout) if wait else timeout
        end = min(deadline, time.monotonic() + step)
        while (msg := client.receive(max(0.0, end - time.monotonic()))) is not None:
            if msg[0] == "/aiedit/pong" and msg[1]:
                return json.loads(msg[1][0])
        if not wait or time.monotonic() >= deadline:
            return None


def run_send(args: Any) -> int:
    """Entry for ``aiedit send`` (argparse namespace from :mod:`bridge.commands.cli`)."""
    with OscClient(args.host, args.port) as client:
        if args.what == "ping":
            info = ping(client, args.timeout if args.timeout else (30.0 if args.wait else 2.0), args.wait,
                        args.token)
            if info is None:
                print(f"no answer from {args.host}:{args.port} (is `aiedit serve` running?)", file=sys.stderr)
                return EXIT_NO_ANSWER
            print(json.dumps(info, indent=1))
            return EXIT_OK
        if args.what == "status":
            client.send("/aiedit/status", *([args.token] if args.token else []))
            msg = _wait_for(client, {"/aiedit/status", "/aiedit/error"}, None, args.timeout or 2.0)
            if msg is None:
                return _no_answer(args)
            if msg[0] == "/aiedit/error":
                print(f"error: {msg[1][1]}", file=sys.stderr)
                return EXIT_FAILED
            listing = json.loads(msg[1][0])
            if args.json:
                print(json.dumps(listing, indent=1))
            else:
                _print_table(listing["jobs"])
                if listing.get("more"):
                    print(f"({listing.get('running', 0)} running, {listing.get('queued', 0)} queued: not all listed)")
            return EXIT_OK
        if args.what == "cancel":
            if args.token:
                client.send("/aiedit/cancel", args.id, args.token)
            else:
                client.send("/aiedit/cancel", args.id)
            msg = _wait_for(client, {"/aiedit/cancelled", "/aiedit/error"}, args.id, args.timeout or 15.0)
            if msg is None:
                return _no_answer(args)
            if msg[0] == "/aiedit/error":
                print(f"error: {msg[1][1]}", file=sys.stderr)
                return EXIT_FAILED
            print(f"{args.id}: cancelled")
            return EXIT_OK
        return _send_job(client, args)


def _send_job(client: OscClient, args: Any) -> int:
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        job = json.loads(text)
    except (OSError, ValueError) as exc:
        print(f"cannot read the job file: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not isinstance(job, dict):
        print("the job file must hold a JSON object", file=sys.stderr)
        return EXIT_FAILED
    if args.token and "token" not in job:
        job["token"] = args.token
    jid = job.get("id") if isinstance(job.get("id"), str) else ""
    if job.get("reply") and args.wait:
        print("note: the job names a reply address, so its events go there; not waiting", file=sys.stderr)
        args.wait = False
    client.send("/aiedit/job", json.dumps(job))
    msg = _wait_for(client, {"/aiedit/ack", "/aiedit/error"}, jid, args.timeout or 5.0)
    if msg is None:
        return _no_answer(args)
    if msg[0] == "/aiedit/error":
        print(f"refused: {msg[1][1]}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{jid}: queued")
    if not args.wait:
        return EXIT_OK
    return follow(client, jid, args.timeout)


def follow(client: OscClient, jid: str, timeout: float | None = None) -> int:
    """Print a job's events until it ends; the exit code says how it ended."""
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        left = 3600.0 if deadline is None else deadline - time.monotonic()
        msg = client.receive(max(0.0, left))
        if msg is None:
            print(f"{jid}: no news within the timeout", file=sys.stderr)
            return EXIT_NO_ANSWER
        address, a = msg
        if not a or a[0] != jid:
            continue
        if address == "/aiedit/progress":
            print(f"{jid}: {a[1]:<10} {100 * a[2]:5.1f}%", flush=True)
        elif address == "/aiedit/done":
            st = json.loads(a[1])
            for i, t in enumerate(st["takes"]):
                sc = t.get("scores") or {}
                mark = "  <- best" if st.get("best") == i else ""
                print(f"  η={t['eta']:<5} {t['path']}  text={sc.get('text')} audio={sc.get('audio')}{mark}")
            return EXIT_OK
        elif address == "/aiedit/error":
            print(f"{jid}: failed: {a[1]}", file=sys.stderr)
            return EXIT_FAILED
        elif address == "/aiedit/cancelled":
            print(f"{jid}: cancelled", file=sys.stderr)
            return EXIT_FAILED


def _wait_for(
    client: OscClient, addresses: set[str], jid: str | None, timeout: float
) -> tuple[str, list] | None:
    deadline = time.monotonic() + timeout
    while (msg := client.receive(max(0.0, deadline - time.monotonic()))) is not None:
        if msg[0] in addresses and (jid is None or (msg[1] and msg[1][0] in (jid, ""))):
            return msg
    return None


def _no_answer(args: Any) -> int:
    print(f"no answer from {args.host}:{args.port} (is `aiedit serve` running?)", file=sys.stderr)
    return EXIT_NO_ANSWER


def _print_table(jobs: list[dict[str, Any]]) -> None:
    if not jobs:
        print("no jobs")
        return
    print(f"{'id':<24} {'state':<10} {'stage':<10} {'progress':>8}  label")
    for j in jobs:
        pct = 100 * (j.get("progress") or 0)
        stage = j.get("stage") or ""
        print(f"{j['id']:<24} {j['state']:<10} {stage:<10} {pct:7.1f}%  {j.get('label') or ''}")
