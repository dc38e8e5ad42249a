"""OSC over UDP: the four request addresses, replies, and robustness against whatever arrives on the port.

Every datagram is parsed by :mod:`bridge.wire.osc_codec` (bounded: sizes, nesting, message count) and dispatched
here by literal address, and replies are encoded there too. Its own server parser once hung the
daemon on a 20-byte bundle, and its dispatcher expands address patterns and honours time tags (a bundle
tagged an hour ahead would make the answering thread sleep). Requests are handled one at a time on one
thread: handlers are quick, and order matters (a cancel sent right after its job must see it). Replies leave
from the server's own socket, so they come from the port clients sent to. The thread stamps
:attr:`OscFrontend.alive_at` every loop, and the heartbeat stops when it goes stale.

Work per datagram is bounded (at most 16 messages, each answered in O(its answer)), and per sender per second:
status listings per sender address and port, wrong tokens per sender host (a guesser picks a new port for every
try, not a new address). What is over a bucket is refused at once with an ``/aiedit/error`` starting "busy:",
never left unanswered.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import socket
import socketserver
import threading
import time
from typing import Any

from bridge.jobs.protocol import (
    REPLY_HOST_MSG,
    VERSION,
    ProtocolError,
    ReplyTo,
    decode_json,
    parse_cancel,
    parse_query_args,
    parse_status_args,
    reply_allowed,
    reply_family_error,
    token_ok,
)
from bridge.jobs.service import Service
from bridge.wire.osc_codec import MAX_DATAGRAM as MAX_UDP
from bridge.wire.osc_codec import Message, WireError, encode_message, parse_datagram
from bridge.wire.throttle import Buckets

log = logging.getLogger("aiedit.osc")

MAX_DATAGRAM = 65_000  # what fits in one UDP datagram with headroom for the OSC framing
AMPLIFY = 4  # unauthenticated replies: at most this many times the request's bytes
STALE_AFTER_S = 5.0  # the answering thread counts as hung when it has not looped for this long
STATUS_RATE, STATUS_BURST = 20.0, 40.0  # status listings per second per sender (address, port), after a burst
STATUS_ALL_RATE, STATUS_ALL_BURST = 200.0, 400.0  # ... and for all senders together
GUESS_RATE, GUESS_BURST = 0.5, 5.0  # wrong tokens per second per sender host, after a burst


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, _sock = self.request
        self.server.frontend.handle_datagram(data, self.client_address)  # type: ignore[attr-defined]


class Server(socketserver.UDPServer):
    max_packet_size = MAX_UDP  # socketserver's default (8192) would truncate larger jobs

    def __init__(self, address: tuple[str, int], frontend: OscFrontend) -> None:
        self.frontend = frontend
        self.address_family = family_of(address[0])
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # A deeper receive queue rides out bursts while the machine is busy (the kernel caps it at rmem_max).
        with contextlib.suppress(OSError):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        super().server_bind()

    def service_actions(self) -> None:
        self.frontend.alive_at = time.monotonic()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("error handling a datagram from %s (ignored)", client_address)


def build_message(address: str, args: list[Any]) -> bytes:
    """A reply's bytes (see :func:`bridge.wire.osc_codec.encode_message`: linear time, unlike python-osc's builder)."""
    return encode_message(address, args)


def family_of(host: str) -> socket.AddressFamily:
    """IPv6 for an IPv6 literal (``::1``), else IPv4."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


@functools.lru_cache(maxsize=256)
def _resolve(host: str, port: int, family: socket.AddressFamily = socket.AF_INET) -> tuple[Any, ...]:
    if host == "localhost":  # the loopback of the socket's family (not every hosts file names ::1 localhost)
        host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    return socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)[0][4]


class OscFrontend:
    """Binds the port, routes the four requests to the :class:`Service`, and sends every reply and event."""

    def __init__(self, host: str, port: int) -> None:
        self.server = Server((host, port), self)
        self.server.timeout = None
        self.service: Service | None = None
        self.alive_at = time.monotonic()
        self._routes: dict[str, Any] = {}
        self._budget: _Budget | None = None
        self._ident = -1
        self._status_buckets = Buckets(STATUS_RATE, STATUS_BURST)
        self._status_all = Buckets(STATUS_ALL_RATE, STATUS_ALL_BURST, max_keys=1)
        self._guesses = Buckets(GUESS_RATE, GUESS_BURST)
        self._throttled: set[str] = set()  # hosts already logged as throttled (one line per episode)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def attach(self, service: Service) -> None:
        self.service = service
        self._routes = {
            "/aiedit/job": self._job,
            "/aiedit/cancel": self._cancel,
            "/aiedit/status": self._status,
            "/aiedit/ping": self._ping,
        }

    def answering(self) -> bool:
        """True while the answering thread keeps looping (used by the heartbeat)."""
        return time.monotonic() - self.alive_at < STALE_AFTER_S

    def handle_datagram(self, data: bytes, client: tuple[str, int]) -> None:
        """Parse one datagram with bounds, then run each message's handler in order.

        While it runs, replies are counted against the datagram's budget (see :class:`_Budget`)."""
        self.alive_at = time.monotonic()
        try:
            messages = parse_datagram(data)
        except WireError as exc:
            log.debug("dropped a datagram of %d bytes from %s: %s", len(data), client[0], exc)
            return
        self._budget = _Budget(len(data), needs_token=self.service is not None and self.service.token is not None)
        try:
            for m in messages:
                self._dispatch(m, client)
        finally:
            self._budget = None
        self.alive_at = time.monotonic()

    def _dispatch(self, m: Message, client: tuple[str, int]) -> None:
        handler = self._routes.get(m.address, self._unknown)
        handler(client, m.address, *m.args)

    def send(self, target: ReplyTo, address: str, args: list[Any]) -> None:
        """Send one OSC message; failures (unreachable host, full buffer) are logged, never raised.

        On the answering thread, a reply over the current datagram's budget is dropped."""
        try:
            data = build_message(address, args)
            budget = self._budget if threading.get_ident() == self._ident else None
            if budget is not None and not budget.take(len(data)):
                log.debug("dropped a %d-byte %s to %s: over the unauthenticated reply budget", len(data),
                          address, target.host)
                return
            self.server.socket.sendto(data, _resolve(target.host, target.port, self.server.address_family))
        except (OSError, ValueError, UnicodeError) as exc:
            log.debug("cannot send %s to %s:%s: %s", address, target.host, target.port, exc)

    def serve_forever(self) -> None:
        self._ident = threading.get_ident()
        self.server.serve_forever(poll_interval=0.2)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- handlers (client_address, address, *args) -----------------------------------------------------------

    def _job(self, client: tuple[str, int], address: str, *args: Any) -> None:
        assert self.service is not None
        sender = ReplyTo(client[0], client[1])
        if len(args) != 1 or not isinstance(args[0], str):
            self.send(
                sender, "/aiedit/error", ["", "/aiedit/job takes one string argument holding the job JSON"]
            )
            return
        try:
            obj = decode_json(args[0])
        except ProtocolError as exc:
            self.send(sender, "/aiedit/error", ["", str(exc)])
            return
        if self._refuse_guess(sender, obj.get("token"), obj.get("id") if isinstance(obj.get("id"), str) else ""):
            return
        self._authenticate(obj.get("token"), client)
        self.service.submit(obj, sender)

    def _cancel(self, client: tuple[str, int], address: str, *args: Any) -> None:
        assert self.service is not None
        sender = ReplyTo(client[0], client[1])
        try:
            req = parse_cancel(args)
        except ProtocolError as exc:
            self.send(sender, "/aiedit/error", [exc.job_id, str(exc)])
            return
        if self._refuse_guess(sender, req.token, req.id):
            return
        self._authenticate(req.token, client)
        self.service.cancel(req, sender)

    def _status(self, client: tuple[str, int], address: str, *args: Any) -> None:
        assert self.service is not None
        sender = ReplyTo(client[0], client[1])
        try:
            target, token, since = parse_status_args(args)
        except ProtocolError as exc:
            self.send(sender, "/aiedit/error", ["", str(exc)])
            return
        target, authed = self._answer_to(sender, target, token)
        if target is None:
            return
        if not authed:  # other clients' prompts and source paths are for token holders only
            self.send(target, "/aiedit/error", ["", "refused: status needs the token"])
            return
        if not (self._status_buckets.take((client[0], client[1])) and self._status_all.take("all")):
            self.send(target, "/aiedit/error", ["", "busy: too many status requests; ask again in a second"])
            return
        self.send(target, "/aiedit/status", [self.service.status_text(since)])

    def _ping(self, client: tuple[str, int], address: str, *args: Any) -> None:
        assert self.service is not None
        target, authed = self._query(client, args)
        if target is None:
            return
        info = self.service.daemon_info() if authed else {"version": VERSION, "token_required": True}
        self.send(target, "/aiedit/pong", [json.dumps(info)])

    def _authenticate(self, token: object, client: tuple[str, int]) -> bool:
        """Whether the request may act as a token holder; a wrong token is logged and counted against the
        sender's host (see :meth:`_refuse_guess`)."""
        assert self.service is not None
        if self.service.token is None:
            return True
        ok = token_ok(self.service.token, token)
        if ok and self._budget is not None:
            self._budget.authed = True
        if not ok and token is not None:
            self._guesses.charge(client[0])
            log.warning("wrong token from %s", client[0])
        return ok

    def _refuse_guess(self, sender: ReplyTo, token: object, jid: str) -> bool:
        """True (and a "busy" answer sent) when ``sender``'s host has used up its wrong-token budget and this
        request carries a token: it is not even compared, so guessing runs at :data:`GUESS_RATE` per second."""
        assert self.service is not None
        if self.service.token is None or token is None:
            return False
        host = sender.host
        if self._guesses.level(host) >= 1.0:
            self._throttled.discard(host)
            return False
        wait = self._guesses.wait_s(host)
        if host not in self._throttled:
            self._throttled.add(host)
            log.warning("throttling %s: too many wrong tokens; its requests with a token are refused for %.0f s",
                        host, wait)
        self.send(sender, "/aiedit/error", [jid[:64], f"busy: too many wrong tokens from {host[:60]}; "
                                                     f"try again in {wait:.0f} s"])
        return True

    def _query(self, client: tuple[str, int], args: tuple[Any, ...]) -> tuple[ReplyTo | None, bool]:
        """(where to answer a ping, whether it carried the token) — (None, _) after an error."""
        sender = ReplyTo(client[0], client[1])
        try:
            target, token = parse_query_args(args)
        except ProtocolError as exc:
            self.send(sender, "/aiedit/error", ["", str(exc)])
            return None, False
        return self._answer_to(sender, target, token)

    def _answer_to(self, sender: ReplyTo, target: ReplyTo | None, token: str | None) -> tuple[ReplyTo | None, bool]:
        """Check a status or ping's reply address and token: (where to answer, authenticated), or (None, _)
        after an error was sent."""
        assert self.service is not None
        if target is not None and not reply_allowed(target, sender):
            self.send(sender, "/aiedit/error", ["", REPLY_HOST_MSG])
            return None, False
        if target is not None and (problem := reply_family_error(target, self.service.ip_version)):
            self.send(sender, "/aiedit/error", ["", problem])
            return None, False
        if self._refuse_guess(sender, token, ""):
            return None, False
        return target or sender, self._authenticate(token, (sender.host, sender.port))

    def _unknown(self, client: tuple[str, int], address: str, *args: Any) -> None:
        # Answer only typos of our own addresses: replying to any OSC traffic could start a loop with
        # another app.
        if isinstance(address, str) and address.startswith("/aiedit/"):
            self.send(ReplyTo(client[0], client[1]), "/aiedit/error", ["", f"unknown address {address[:80]}"])
        else:
            log.debug("ignored OSC message to %r", address)


class _Budget:
    """Reply bytes one datagram may cause. With a token configured and none presented, the replies to a
    datagram never exceed :data:`AMPLIFY` times its size, so the port cannot amplify traffic."""

    def __init__(self, size: int, *, needs_token: bool) -> None:
        self.left = AMPLIFY * size
        self.authed = not needs_token

    def take(self, n: int) -> bool:
        if self.authed:
            return True
        if n > self.left:
            return False
        self.left -= n
        return True

