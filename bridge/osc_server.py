"""OSC over UDP: the four request addresses, replies, and robustness against whatever arrives on the port.

python-osc notes that shaped this (read from pythonosc 1.10): the server silently drops datagrams that do
not look like OSC (``verify_request``); ``Dispatcher.call_handlers_for_packet`` swallows ``ParseError`` but
any other exception from a handler reaches ``socketserver.handle_error`` (we log it and keep serving); with
``strict_timing`` a bundle time-tagged in the future makes the handler *sleep* until then, so it is turned
off; incoming addresses are OSC patterns (``/aiedit/*`` would call every handler, and the pattern is
compiled as a regex), so :class:`ExactDispatcher` matches addresses literally. Requests are handled one at a
time on one thread (``BlockingOSCUDPServer``): handlers are quick, and order matters (a cancel sent right
after its job must see it). Replies leave from the server's own socket, so they come from the port clients
sent to.
"""

from __future__ import annotations

import functools
import json
import logging
import socket
from collections.abc import Generator
from typing import Any

from pythonosc.dispatcher import Dispatcher, Handler
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_server import BlockingOSCUDPServer

from bridge.protocol import ProtocolError, ReplyTo, parse_cancel, parse_reply_args
from bridge.service import Service

log = logging.getLogger("aiedit.osc")

MAX_DATAGRAM = 65_000  # what fits in one UDP datagram with headroom for the OSC framing


class ExactDispatcher(Dispatcher):
    """Literal address matching; anything unmapped goes to the default handler."""

    def handlers_for_address(self, address_pattern: str) -> Generator[Handler, None, None]:
        handlers = self._map.get(address_pattern)
        if handlers:
            yield from handlers
        elif self._default_handler:
            yield self._default_handler


class Server(BlockingOSCUDPServer):
    max_packet_size = 65_535  # socketserver's default (8192) would truncate larger jobs

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
        self.dispatcher = ExactDispatcher(strict_timing=False)
        self.server = Server((host, port), self.dispatcher)
        self.server.timeout = None
        self.service: Service | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def attach(self, service: Service) -> None:
        self.service = service
        d = self.dispatcher
        d.map("/aiedit/job", self._job, needs_reply_address=True)
        d.map("/aiedit/cancel", self._cancel, needs_reply_address=True)
        d.map("/aiedit/status", self._status, needs_reply_address=True)
        d.map("/aiedit/ping", self._ping, needs_reply_address=True)
        d.set_default_handler(self._unknown, needs_reply_address=True)

    def send(self, target: ReplyTo, address: str, args: list[Any]) -> None:
        """Send one OSC message; failures (unreachable host, full buffer) are logged, never raised."""
        try:
            self.server.socket.sendto(build_message(address, args), _resolve(target.host, target.port))
        except (OSError, ValueError, UnicodeError) as exc:
            log.debug("cannot send %s to %s:%s: %s", address, target.host, target.port, exc)

    def serve_forever(self) -> None:
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
        self.service.submit(args[0], sender)

    def _cancel(self, client: tuple[str, int], address: str, *args: Any) -> None:
        assert self.service is not None
        sender = ReplyTo(client[0], client[1])
        try:
            req = parse_cancel(args)
        except ProtocolError as exc:
            self.send(sender, "/aiedit/error", [exc.job_id, str(exc)])
            return
        self.service.cancel(req, sender)

    def _status(self, client: tuple[str, int], address: str, *args: Any) -> None:
        assert self.service is not None
        target = self._reply_target(client, args)
        if target is not None:
            self.send(target, "/aiedit/status", [fit_status(self.service.status_list())])

    def _ping(self, client: tuple[str, int], address: str, *args: Any) -> None:
        assert self.service is not None
        target = self._reply_target(client, args)
        if target is not None:
            self.send(target, "/aiedit/pong", [json.dumps(self.service.daemon_info())])

    def _reply_target(self, client: tuple[str, int], args: tuple[Any, ...]) -> ReplyTo | None:
        sender = ReplyTo(client[0], client[1])
        try:
            return parse_reply_args(args) or sender
        except ProtocolError as exc:
            self.send(sender, "/aiedit/error", ["", str(exc)])
            return None

    def _unknown(self, client: tuple[str, int], address: str, *args: Any) -> None:
        # Answer only typos of our own addresses: replying to any OSC traffic could start a loop with
        # another app.
        if isinstance(address, str) and address.startswith("/aiedit/"):
            self.send(ReplyTo(client[0], client[1]), "/aiedit/error", ["", f"unknown address {address[:80]}"])
        else:
            log.debug("ignored OSC message to %r", address)


def fit_status(listing: dict[str, Any]) -> str:
    """The status list as JSON, shortened from the oldest finished job until it fits one datagram."""
    jobs = list(listing["jobs"])
    while True:
        text = json.dumps({"jobs": jobs})
        if len(text.encode()) <= MAX_DATAGRAM or not jobs:
            return text
        jobs = jobs[: -max(1, len(jobs) // 10)]
