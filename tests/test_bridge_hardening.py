"""Regression tests for the daemon-hardening issue (#10): each reproduces one attack against the real daemon
(``python -m bridge serve --model tiny``) over real UDP on 127.0.0.1 and asserts it no longer works."""

from __future__ import annotations

import json
import struct
import time

import pytest
from bridge_helpers import Daemon, Listener, make_wav
from pythonosc.osc_message_builder import OscMessageBuilder

from bridge.osc_wire import MAX_MESSAGES, WireError, parse_datagram
from bridge.spool import Heartbeat, Spool

HANG_BUNDLE = bytes.fromhex("2362756e646c65000000000000000001fffffffc")


def osc(address: str, *args) -> bytes:
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


def bundle(*elements: bytes, sizes: list[int] | None = None) -> bytes:
    out = b"#bundle\x00" + b"\x00" * 7 + b"\x01"
    for i, e in enumerate(elements):
        out += struct.pack(">i", sizes[i] if sizes else len(e)) + e
    return out


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
