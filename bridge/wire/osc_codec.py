"""A bounded OSC 1.0 datagram parser: every datagram is read here, never by python-osc's parser.

Why our own: python-osc's bundle parser trusts element sizes, and a 20-byte bundle whose element size is −4
(hex ``2362756e646c65000000000000000001fffffffc``) makes it loop forever on the answering thread. Here every
length is checked against the bytes that are left before it is used, nesting and message counts are capped,
and anything odd raises :class:`WireError` (one short reason), so a datagram costs at most linear time in its
size. Only what the daemon needs is accepted: messages and bundles with the common argument types.

Replies are encoded here too (:func:`encode_message`): python-osc's builder parses every message it builds again,
and its string reader is quadratic in the string's length — 10 ms for one 40 KB status answer, which made a
16-status datagram cost the answering thread 160 ms (issue 20). The bytes are the ones python-osc would build.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

MAX_DATAGRAM = 65_535  # the largest UDP payload; the socket never hands us more
MAX_DEPTH = 4  # bundles inside bundles
MAX_MESSAGES = 16  # messages in one datagram, all nesting levels together
MAX_ARGS = 16  # arguments of one message
BUNDLE_TAG = b"#bundle\x00"


class WireError(ValueError):
    """The datagram is not OSC we accept (the message says why, in a few words)."""


@dataclass(frozen=True)
class Message:
    address: str
    args: tuple[Any, ...]


def parse_datagram(data: bytes) -> list[Message]:
    """The messages in one datagram (a bundle's in order), or :class:`WireError`."""
    if len(data) > MAX_DATAGRAM:
        raise WireError(f"datagram of {len(data)} bytes is too large")
    if not data:
        raise WireError("empty datagram")
    out: list[Message] = []
    _element(bytes(data), 0, len(data), 0, out)
    return out


def _element(buf: bytes, start: int, end: int, depth: int, out: list[Message]) -> None:
    if end - start >= 8 and buf[start:start + 8] == BUNDLE_TAG:
        _bundle(buf, start, end, depth, out)
    elif end > start and buf[start] == ord("/"):
        if len(out) >= MAX_MESSAGES:
            raise WireError(f"more than {MAX_MESSAGES} messages in one datagram")
        out.append(_message(buf, start, end))
    else:
        raise WireError("neither an OSC message nor a bundle")


def _bundle(buf: bytes, start: int, end: int, depth: int, out: list[Message]) -> None:
    if depth >= MAX_DEPTH:
        raise WireError(f"bundles nested deeper than {MAX_DEPTH}")
    pos = start + 16  # "#bundle\0" and the 8-byte time tag (ignored: requests are answered at once)
    if pos > end:
        raise WireError("bundle without its time tag")
    while pos < end:
        if end - pos < 4:
            raise WireError("truncated bundle element size")
        (size,) = struct.unpack_from(">i", buf, pos)
        pos += 4
        if size <= 0 or size % 4 or size > end - pos:
            raise WireError(f"bundle element size {size} does not fit the datagram")
        _element(buf, pos, pos + size, depth + 1, out)
        pos += size


def _string(buf: bytes, pos: int, end: int) -> tuple[str, int]:
    nul = buf.find(b"\x00", pos, end)
    if nul < 0:
        raise WireError("unterminated string")
    try:
        text = buf[pos:nul].decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("string is not UTF-8") from None
    return text, pos + ((nul - pos) // 4 + 1) * 4


_FIXED = {"i": (">i", 4), "f": (">f", 4), "d": (">d", 8), "h": (">q", 8), "t": (">Q", 8), "c": (">I", 4),
          "r": (">I", 4), "m": (">I", 4)}
_CONST = {"T": True, "F": False, "N": None, "I": float("inf")}


def _message(buf: bytes, start: int, end: int) -> Message:
    address, pos = _string(buf, start, end)
    if pos > end:
        raise WireError("address runs past the end")
    if pos == end:  # no type tag string: an old-style message without arguments
        return Message(address, ())
    if buf[pos] != ord(","):
        raise WireError("no type tag string")
    tags, pos = _string(buf, pos, end)
    if pos > end:
        raise WireError("type tags run past the end")
    tags = tags[1:]
    if len(tags) > MAX_ARGS:
        raise WireError(f"more than {MAX_ARGS} arguments")
    args: list[Any] = []
    for tag in tags:
        if tag in _FIXED:
            fmt, n = _FIXED[tag]
            if end - pos < n:
                raise WireError(f"argument '{tag}' runs past the end")
            args.append(struct.unpack_from(fmt, buf, pos)[0])
            pos += n
        elif tag in ("s", "S"):
            if pos >= end:
                raise WireError("string argument runs past the end")
            text, pos = _string(buf, pos, end)
            if pos > end:
                raise WireError("string argument runs past the end")
            args.append(text)
        elif tag == "b":
            if end - pos < 4:
                raise WireError("blob size runs past the end")
            (size,) = struct.unpack_from(">i", buf, pos)
            pos += 4
            padded = (size + 3) // 4 * 4
            if size < 0 or padded > end - pos:
                raise WireError(f"blob size {size} does not fit the datagram")
            args.append(bytes(buf[pos:pos + size]))
            pos += padded
        elif tag in _CONST:
            args.append(_CONST[tag])
        else:
            raise WireError(f"unsupported type tag {tag[:1]!r}")
    return Message(address, tuple(args))


def _osc_string(text: str) -> bytes:
    data = text.encode("utf-8")
    return data + b"\x00" * (4 - len(data) % 4)


def encode_message(address: str, args: list[Any] | tuple[Any, ...]) -> bytes:
    """One OSC message: strings, bytes (blob), bools, None, 32/64-bit ints and 32-bit floats, typed as python-osc
    types them; ValueError for anything else or a string holding NUL."""
    tags, body = [","], []
    for a in args:
        if isinstance(a, str):
            if "\x00" in a:
                raise ValueError("an OSC string cannot hold NUL")
            tags.append("s")
            body.append(_osc_string(a))
        elif isinstance(a, bytes):
            tags.append("b")
            body.append(struct.pack(">i", len(a)) + a + b"\x00" * (-len(a) % 4))
        elif a is True or a is False:
            tags.append("T" if a else "F")
        elif isinstance(a, int):
            if a.bit_length() > 31:
                tags.append("h")
                body.append(struct.pack(">q", a))
            else:
                tags.append("i")
                body.append(struct.pack(">i", a))
        elif isinstance(a, float):
            tags.append("f")
            body.append(struct.pack(">f", a))
        elif a is None:
            tags.append("N")
        else:
            raise ValueError(f"cannot encode {type(a).__name__} as an OSC argument")
    if not address or "\x00" in address:
        raise ValueError("bad OSC address")
    return _osc_string(address) + _osc_string("".join(tags)) + b"".join(body)
