"""OSC over UDP: the four request addresses, replies, and robustness against whatever arrives on the port.

Every datagram is parsed by :mod:`bridge.osc_wire` (bounded: sizes, nesting, message count) and dispatched
here by literal address; python-osc is used only to *build* replies. Its own server parser once hung the
daemon on a 20-byte bundle, and its dispatcher expands address patterns and honours time tags (a bundle
tagged an hour ahead would make the answering thread sleep). Requests are handled one at a time on one
thread: handlers are quick, and order matters (a cancel sent right after its job must see it). Replies leave
from the server's own socket, so they come from the port clients sent to. The thread stamps
:attr:`OscFrontend.alive_at` every loop, and the heartbeat stops when it goes stale.
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

from pythonosc.osc_message_builder import OscMessageBuilder

from bridge.osc_wire import MAX_DATAGRAM as MAX_UDP
from bridge.osc_wire import Message, WireError, parse_datagram
from bridge.protocol import (
    REPLY_HOST_MSG,
    VERSION,
    ProtocolError,
    ReplyTo,
    decode_json,
    parse_cancel,
    parse_query_args,
    reply_allowed,
    token_ok,
)
from bridge.service import Service

log = logging.getLogger("aiedit.osc")

MAX_DATAGRAM = 65_000  # what fits in one UDP datagram with headroom for the OSC framing
AMPLIFY = 4  # unauthenticated replies: at most this many times the request's bytes
STALE_AFTER_S = 5.0  # the answering thread counts as hung when it has not looped for this long


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, _sock = self.request
        self.server.frontend.handle_datagram(data, self.client_address)  # type: ignore[attr-defined]


class Server(socketserver.UDPServer):
    max_packet_size = MAX_UDP  # socketserver's default (8192) would truncate larger jobs

    def __init__(self, address: tuple[str, int], frontend: OscFrontend) -> None:
        self.frontend = frontend
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
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


@functools.lru_cache(maxsize=256)
def _resolve(host: str, port: int) -> tuple[Any, ...]:
    return socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)[0][4]


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
            self.server.socket.sendto(data, _resolve(target.host, target.port))
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
        self._authenticate(obj.get("token"))
        self.service.submit(obj, sender)

    def _cancel(self, client: tuple[str, int], address: str, *args: Any) -> None:
        assert self.service is not None
        sender = ReplyTo(client[0], client[1])
        try:
            req = parse_cancel(args)
        except ProtocolError as exc:
            self.send(sender, "/aiedit/error", [exc.job_id, str(exc)])
            return
        self._authenticate(req.token)
        self.service.cancel(req, sender)

    def _status(self, client: tuple[str, int], address: str, *args: Any) -> None:
        assert self.service is not None
        target, authed = self._query(client, args)
        if target is None:
            return
        if not authed:  # other clients' prompts and source paths are for token holders only
            self.send(target, "/aiedit/error", ["", "refused: status needs the token"])
            return
        self.send(target, "/aiedit/status", [fit_status(self.service.status_list())])

    def _ping(self, client: tuple[str, int], address: str, *args: Any) -> None:
        assert self.service is not None
        target, authed = self._query(client, args)
        if target is None:
            return
        info = self.service.daemon_info() if authed else {"version": VERSION, "token_required": True}
        self.send(target, "/aiedit/pong", [json.dumps(info)])

    def _authenticate(self, token: object) -> bool:
        assert self.service is not None
        ok = self.service.token is not None and token_ok(self.service.token, token)
        if ok and self._budget is not None:
            self._budget.authed = True
        return ok or self.service.token is None

    def _query(self, client: tuple[str, int], args: tuple[Any, ...]) -> tuple[ReplyTo | None, bool]:
        """(where to answer a status or ping, whether it carried the token) — (None, _) after an error."""
        sender = ReplyTo(client[0], client[1])
        try:
            target, token = parse_query_args(args)
        except ProtocolError as exc:
            self.send(sender, "/aiedit/error", ["", str(exc)])
            return None, False
        if target is not None and not reply_allowed(target, sender):
            self.send(sender, "/aiedit/error", ["", REPLY_HOST_MSG])
            return None, False
        return target or sender, self._authenticate(token)

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


def fit_status(listing: dict[str, Any]) -> str:
    """The status list as JSON, shortened from the oldest finished job until it fits one datagram."""
    jobs = list(listing["jobs"])
    while True:
        text = json.dumps({"jobs": jobs})
        if len(text.encode()) <= MAX_DATAGRAM or not jobs:
            return text
        jobs = jobs[: -max(1, len(jobs) // 10)]
