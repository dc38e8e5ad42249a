"""Protocol version 1 (docs/protocol.md): turn client messages into typed objects, or say in one line what
is wrong.

Pure on purpose (no torch, no sockets, no files except :func:`check_source`, which reads an audio header):
this runs on the daemon's answering path and in the unit tests.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
import os
import re
import stat
import time
from dataclasses import dataclass, field
from typing import Any

import soundfile as sf

from engine.audio_io import AudioInfo, check_inpaint, region_frames
from engine.errors import InputError
from engine.params import (
    MAX_SAMPLE_STEPS,
    MAX_STEPS,
    MODES,
    MUSIC_FIELDS,
    STARTS,
    EditParams,
    EditRequest,
    Inpaint,
    MusicContext,
    Region,
)

VERSION = 1
ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
PRIORITIES = ("interactive", "batch")
MAX_MESSAGE_BYTES = 64 * 1024  # one UDP datagram; spool files get the same limit
MAX_LABEL = 1000
MAX_PATH = 4096  # characters of source.path (PATH_MAX on Linux)
MAX_NAME = 255  # bytes of one path component (NAME_MAX)
STATES_FINAL = ("done", "failed", "cancelled")
STATES = ("queued", "running", *STATES_FINAL)
MAX_INT = 2**63 - 1  # whole numbers beyond a signed 64-bit integer are refused (a seed, a step count)
# The fields of a job object (docs/protocol.md). Only these are kept in memory: unknown fields are ignored, and a
# client padding jobs with them must not make each queued job cost its whole datagram (issue 20).
JOB_FIELDS = ("version", "id", "source", "prompt", "etas", "mode", "inpaint", "seed", "model", "priority", "reply",
              "label", "steps", "guidance", "start", "source_prompt", *MUSIC_FIELDS)


class ProtocolError(Exception):
    """A refused message. ``job_id`` is the message's id when a valid one could be read, else ``""``.

    ``record`` False means: refuse without writing a ``failed`` status (wrong token: an unauthenticated client
    must not create files).
    """

    def __init__(self, message: str, job_id: str = "", *, record: bool = True) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.record = record


@dataclass(frozen=True)
class ReplyTo:
    host: str
    port: int


@dataclass(frozen=True)
class Job:
    """A validated job. ``source_path`` is the daemon-side path (after --map-path); ``raw`` is what the
    client sent."""

    id: str
    source_path: str
    request: EditRequest
    priority: str = "interactive"
    model: str | None = None
    reply: ReplyTo | None = None
    label: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def params(self) -> EditParams:
        return self.request.params

    @property
    def retake_key(self) -> str | None:
        """Equal for jobs that share stages 1-2 (same model, source region, prompt, musical context, seed and stage
        settings; other η): the pool sends such a re-take to the worker that holds them (cf.
        ``engine.cache.cache_key``, which keys on the decoded audio, known only to the worker). It reads
        ``<model>|<hash>`` so the pool can tell its model (:func:`key_model`). None without a seed: such a job
        shares nothing."""
        if self.params.seed is None:
            return None
        r = self.request.region
        what = [self.source_path, r.start, r.length, self.model, self.params.stage_key(),
                self.request.music.to_dict()]
        digest = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return f"{self.model or ''}|{digest}"


def key_model(key: str | None) -> str | None:
    """The model of a :attr:`Job.retake_key` (None for no key, or a job that named none)."""
    if not key:
        return None
    return key.rpartition("|")[0] or None


@dataclass(frozen=True)
class CancelRequest:
    id: str
    token: str | None = None
    reply: ReplyTo | None = None


def valid_id(value: object) -> bool:
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


def token_ok(expected: str | None, given: object) -> bool:
    """True when the daemon needs no token or ``given`` equals it (constant-time compare)."""
    if expected is None:
        return True
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


class PathMap:
    """``--map-path CLIENT=SERVER`` prefixes: translate client source paths in, and spool paths back out.

    A prefix matches only at a path-component boundary. Backslashes after a Windows-style client prefix become
    ``/`` on a POSIX daemon, so ``C:\\Audio=/mnt/audio`` maps ``C:\\Audio\\a\\b.wav`` to
    ``/mnt/audio/a/b.wav``.
    """

    def __init__(self, pairs: list[tuple[str, str]] | None = None) -> None:
        self.pairs = sorted(pairs or [], key=lambda p: -len(p[0]))

    @classmethod
    def parse(cls, specs: list[str] | None) -> PathMap:
        pairs = []
        for spec in specs or []:
            client, sep, server = spec.partition("=")
            if not sep or not client or not server:
                raise ValueError(f"--map-path {spec!r} must look like CLIENT_PREFIX=SERVER_PREFIX")
            pairs.append((client, server))
        return cls(pairs)

    def to_server(self, path: str) -> str:
        for client, server in self.pairs:
            rest = _strip_prefix(path, client)
            if rest is not None:
                if "\\" in client and os.sep == "/":
                    rest = rest.replace("\\", "/")
                return server.rstrip("/\\") + rest if rest else server
        return path

    def to_client(self, path: str) -> str:
        for client, server in self.pairs:
            rest = _strip_prefix(path, server)
            if rest is not None:
                if "\\" in client:
                    rest = rest.replace("/", "\\")
                return client.rstrip("/\\") + rest if rest else client
        return path


def _strip_prefix(path: str, prefix: str) -> str | None:
    """The rest of ``path`` after ``prefix`` (starting with a separator, or ``""``), or None if it does not
    match."""
    bare = prefix.rstrip("/\\")
    if not bare:  # "/" maps everything
        return path if path.startswith(prefix) else None
    if path == bare:
        return ""
    if path.startswith(bare) and path[len(bare)] in "/\\":
        return path[len(bare) :]
    return None


def decode_json(text: object, what: str = "job") -> dict[str, Any]:
    """The JSON object in ``text`` (str or bytes), or ProtocolError (no id known yet)."""
    if isinstance(text, bytes | bytearray):
        if len(text) > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"the {what} is too large ({len(text)} bytes, at most {MAX_MESSAGE_BYTES})")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(f"the {what} is not UTF-8 text") from None
    if not isinstance(text, str):
        raise ProtocolError(f"the {what} must be one string holding JSON, got {type(text).__name__}")
    if len(text.encode("utf-8", "replace")) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"the {what} is too large (at most {MAX_MESSAGE_BYTES} bytes)")
    try:
        obj = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"the {what} is not valid JSON ({_short(exc)})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"the {what} must be a JSON object, got {_json_type(obj)}")
    try:  # "\ud800" escapes decode to lone surrogates, which cannot be written back as UTF-8
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError(f"the {what} holds invalid Unicode (a lone surrogate escape)") from None
    return obj


def parse_job(obj: dict[str, Any], *, path_map: PathMap | None = None) -> Job:
    """Validate a job object (see the table in docs/protocol.md) without touching files.

    The id is read first so every later error carries it. Token and model checks are the daemon's (they
    depend on its configuration); the source file is checked by :func:`check_source`.
    """
    if not isinstance(obj, dict):
        raise ProtocolError(f"the job must be a JSON object, got {_json_type(obj)}")
    jid = obj.get("id")
    if jid is None:
        raise ProtocolError("the job has no id")
    if not valid_id(jid):
        raise ProtocolError(f"job id {_clip(jid)} must be 1-64 letters, digits, '-' or '_'")
    try:
        return _parse_job(obj, jid, path_map or PathMap())
    except InputError as exc:
        raise ProtocolError(str(exc), jid) from None


def _parse_job(obj: dict[str, Any], jid: str, path_map: PathMap) -> Job:
    version = obj.get("version")
    if version is None:
        raise InputError("the job has no version (this daemon speaks version 1)")
    if _whole(version) is None or int(version) != VERSION:
        raise InputError(f"unsupported protocol version {_clip(version)} (this daemon speaks {VERSION})")

    src = obj.get("source")
    if not isinstance(src, dict):
        raise InputError('source must be an object like {"path": "/abs/file.wav"}')
    path = src.get("path")
    if not isinstance(path, str) or not path.strip():
        raise InputError("source.path must be the absolute path of an audio file")
    if "\x00" in path:
        raise InputError("source.path holds a NUL character")
    server_path = path_map.to_server(path)
    if not os.path.isabs(server_path):
        raise InputError(f"source.path must be absolute, got {_clip(path)}")
    check_path_shape(server_path)
    start = _number(src.get("start", 0.0), "source.start", default=0.0)
    length = _number(src.get("length"), "source.length", default=None)

    prompt = obj.get("prompt")
    if not isinstance(prompt, str):
        raise InputError("prompt must be a string: what the sound should become")
    etas = obj.get("etas")
    if not isinstance(etas, list):
        raise InputError("etas must be a list of edit strengths, e.g. [0.3, 0.5, 0.7]")
    for e in etas:
        if not _is_number(e):
            raise InputError(f"edit strength {_clip(e)} is not a number")
    mode = _string(obj.get("mode"), "mode", default="lora")
    if mode not in MODES:
        raise InputError(f"unknown mode {_clip(mode)}: use one of {', '.join(MODES)}")
    inpaint = None
    if obj.get("inpaint") is not None:
        ip = obj["inpaint"]
        if not isinstance(ip, dict):
            raise InputError('inpaint must be an object {"start": s, "end": s} or null')
        a = _number(ip.get("start"), "inpaint.start", default=None)
        b = _number(ip.get("end"), "inpaint.end", default=None)
        if a is None or b is None:
            raise InputError("inpaint needs both start and end (seconds from the region start)")
        inpaint = Inpaint(a, b)
    seed = _integer(obj.get("seed"), "seed", default=0)
    model = _string(obj.get("model"), "model", default=None)
    priority = _string(obj.get("priority"), "priority", default="interactive")
    if priority not in PRIORITIES:
        raise InputError(f"unknown priority {_clip(priority)}: use interactive or batch")
    reply = parse_reply(obj.get("reply"))
    _string(obj.get("token"), "token", default=None)
    label = _string(obj.get("label"), "label", default=None)
    if label is not None and len(label) > MAX_LABEL:
        raise InputError(f"label is too long ({len(label)} characters, at most {MAX_LABEL})")
    steps = obj.get("steps")
    step_kw: dict[str, int] = {}
    if steps is not None:
        if not isinstance(steps, dict):
            raise InputError('steps must be an object like {"embed": 500, "tune": 1500, "sample": 100}')
        for key, name in (("embed", "embed_steps"), ("tune", "tune_steps"), ("sample", "sample_steps")):
            v = _integer(steps.get(key), f"steps.{key}", default=None)
            if v is not None:
                low, high = (1, MAX_SAMPLE_STEPS) if key == "sample" else (0, MAX_STEPS)
                if not low <= v <= high:
                    raise InputError(f"steps.{key} {v} must be between {low} and {high}")
                step_kw[name] = v
    guidance = _number(obj.get("guidance"), "guidance", default=None)
    start_from = _string(obj.get("start"), "start", default="noise")
    if start_from not in STARTS:
        raise InputError(f"unknown start {_clip(start_from)}: use noise or inversion")
    source_prompt = _string(obj.get("source_prompt"), "source_prompt", default="")

    params = EditParams(
        prompt=prompt,
        etas=tuple(float(e) for e in etas),
        mode=mode,
        seed=seed,
        inpaint=inpaint,
        guidance=guidance,
        start=start_from,
        source_prompt=source_prompt,
        **step_kw,
    )
    request = EditRequest(source=server_path, region=Region(start, length), params=params,
                          music=parse_music(obj)).validate()
    return Job(
        id=jid,
        source_path=server_path,
        request=request,
        priority=priority,
        model=model,
        reply=reply,
        label=label,
        raw={k: obj[k] for k in JOB_FIELDS if k in obj},
    )


def parse_music(obj: dict[str, Any]) -> MusicContext:
    """The job's musical context (``lyrics``, ``bpm``, ``key``, ``time_signature``, ``language``), checked by
    :meth:`engine.params.MusicContext.validate` (the one place its ranges live); its message is clipped, since it
    quotes the value sent."""
    values = {f: obj.get(f) for f in MUSIC_FIELDS}
    if _is_number(values["bpm"]):
        values["bpm"] = float(values["bpm"])
    try:
        return MusicContext(**values).validate()
    except InputError as exc:
        text = str(exc)
        raise InputError(text if len(text) <= 200 else text[:197] + "...") from None


def check_path_shape(path: str) -> None:
    """Refuse paths that can never name a readable file, before anything touches the file system: over
    :data:`MAX_PATH` characters, a name over :data:`MAX_NAME` bytes, or a trailing separator (a folder)."""
    if len(path) > MAX_PATH:
        raise InputError(f"source.path is too long ({len(path)} characters, at most {MAX_PATH})")
    if path.endswith(("/", "\\")):
        raise InputError("source.path ends with a separator: it must name a file, not a folder")
    for part in re.split(r"[/\\]", path):
        if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME:
            raise InputError(f"source.path holds a name over {MAX_NAME} bytes")


def check_source(job: Job) -> tuple[AudioInfo, int]:
    """Probe the source, its region and the inpaint range: (file info, region frame count), or ProtocolError
    for the job's id — so a job that cannot run is refused before it is queued."""
    try:
        job.request.validate()
        info = probe_source(job.source_path)
        _, count = region_frames(info, job.request.region)
        check_inpaint(job.params.inpaint, count, info.sample_rate)
    except InputError as exc:
        raise ProtocolError(str(exc), job.id) from None
    return info, count


def open_regular(path: str) -> int:
    """A read descriptor on ``path`` that never blocks (``O_NONBLOCK``: a FIFO opens at once) and is checked to be
    a regular file on the descriptor itself; InputError with the uniform :func:`no_audio` message otherwise."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    flags |= getattr(os, "O_BINARY", 0)  # Windows: no newline translation under libsndfile
    try:
        fd = os.open(path, flags)
    except (OSError, ValueError):
        raise InputError(no_audio(path)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(no_audio(path))
    except BaseException:
        os.close(fd)
        raise
    return fd


def probe_source(path: str) -> AudioInfo:
    """Header facts of a source file, opened so that nothing can block the answering thread.

    ``O_NONBLOCK`` makes opening a FIFO (or a path swapped to one) return at once, and the regular-file test
    is made on the opened descriptor, so a swap after the test cannot matter. Every way a path can fail (missing,
    not a file, unreadable, not audio) gives the same message, so an unauthenticated sender cannot learn
    which paths exist on the daemon's machine.
    """
    fd = open_regular(path)
    try:
        with sf.SoundFile(fd, closefd=False) as f:
            info = AudioInfo(int(f.samplerate), int(f.channels), int(f.frames))
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError):
        raise InputError(no_audio(path)) from None
    finally:
        os.close(fd)
    if info.frames <= 0 or info.sample_rate <= 0 or info.channels <= 0:
        raise InputError(f"{os.path.basename(path)} holds no audio")
    return info


def no_audio(path: str) -> str:
    shown = path if len(path) <= 300 else path[:297] + "..."
    return f"no readable audio file at {shown} (not found, not a file, unreadable or not audio)"


def parse_reply(value: object) -> ReplyTo | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InputError('reply must be an object {"host": "127.0.0.1", "port": 9051}')
    host = value.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host or len(host) > 255:
        raise InputError("reply.host must be a host name or address")
    port = _integer(value.get("port"), "reply.port", default=None)
    if port is None or not 1 <= port <= 65535:
        raise InputError("reply.port must be a port number between 1 and 65535")
    return ReplyTo(host, port)


def parse_cancel(args: tuple[Any, ...] | list[Any]) -> CancelRequest:
    """``/aiedit/cancel`` arguments: ``[id]``, ``[id, token]`` or ``[cancel_json]``."""
    if not args or len(args) > 2:
        raise ProtocolError('cancel takes [id], [id, token] or [{"id": ...}]')
    first = args[0]
    if isinstance(first, str) and first.lstrip().startswith("{"):
        if len(args) != 1:
            raise ProtocolError("cancel with a JSON object takes no other argument")
        return cancel_from_object(decode_json(first, "cancel"))
    if not valid_id(first):
        raise ProtocolError(f"cancel: job id {_clip(first)} must be 1-64 letters, digits, '-' or '_'")
    token = args[1] if len(args) == 2 else None
    if token is not None and not isinstance(token, str):
        raise ProtocolError("cancel: the token must be a string", first)
    return CancelRequest(first, token)


def cancel_from_object(obj: dict[str, Any]) -> CancelRequest:
    """A cancel object (OSC JSON form, or a spool file with ``"op": "cancel"``)."""
    jid = obj.get("id")
    if not valid_id(jid):
        raise ProtocolError(f"cancel: job id {_clip(jid)} must be 1-64 letters, digits, '-' or '_'")
    token = obj.get("token")
    if token is not None and not isinstance(token, str):
        raise ProtocolError("cancel: the token must be a string", jid)
    try:
        reply = parse_reply(obj.get("reply"))
    except InputError as exc:
        raise ProtocolError(f"cancel: {exc}", jid) from None
    return CancelRequest(jid, token, reply)


def parse_query_args(args: tuple[Any, ...] | list[Any]) -> tuple[ReplyTo | None, str | None]:
    """``/aiedit/status`` and ``/aiedit/ping`` arguments: ``[]``, ``[token]``, ``[reply_host, reply_port]``
    or ``[reply_host, reply_port, token]`` → (reply address or None, token or None)."""
    args = list(args)
    token = None
    if len(args) in (1, 3):
        token = args.pop()
        if not isinstance(token, str):
            raise ProtocolError("the token must be a string")
    return parse_reply_args(args), token


def parse_status_args(args: tuple[Any, ...] | list[Any]) -> tuple[ReplyTo | None, str | None, float | None]:
    """``/aiedit/status`` arguments: those of :func:`parse_query_args`, or one JSON object
    ``{"token"?, "since"?, "reply"?}`` → (reply address or None, token or None, since or None)."""
    if len(args) == 1 and isinstance(args[0], str) and args[0].lstrip().startswith("{"):
        obj = decode_json(args[0], "status request")
        token, since = obj.get("token"), obj.get("since")
        if token is not None and not isinstance(token, str):
            raise ProtocolError("the token must be a string")
        if since is not None and not _is_number(since):
            raise ProtocolError(f"since must be a time in seconds (the 'updated' of a status), got {_clip(since)}")
        try:
            reply = parse_reply(obj.get("reply"))
        except InputError as exc:
            raise ProtocolError(str(exc)) from None
        return reply, token, None if since is None else float(since)
    target, token = parse_query_args(args)
    return target, token, None


def parse_reply_args(args: tuple[Any, ...] | list[Any]) -> ReplyTo | None:
    """``[]`` or ``[reply_host, reply_port]``."""
    if not args:
        return None
    if len(args) != 2 or not isinstance(args[0], str) or not args[0]:
        raise ProtocolError("expected no arguments, [token], [reply_host, reply_port] or [host, port, token]")
    port = args[1]
    if isinstance(port, float) and port.is_integer():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ProtocolError("reply_port must be a port number between 1 and 65535")
    return ReplyTo(args[0], port)


def host_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP literal (or ``localhost``) as an address; None for anything that would need a DNS lookup."""
    if host == "localhost":
        host = "127.0.0.1"
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback: no token is needed to listen there."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def reply_allowed(target: ReplyTo, sender: ReplyTo | None, *, trusted: bool = False) -> bool:
    """Replies go only to the sender's own host (any port there), so the daemon cannot be aimed at a third
    party. A spool message has no sender: loopback only, unless it was authenticated with the token
    (``trusted``)."""
    t = host_ip(target.host)
    if t is None:
        return False
    if sender is None:
        return trusted or t.is_loopback
    s = host_ip(sender.host)
    return s is not None and (t == s or (t.is_loopback and s.is_loopback))


REPLY_HOST_MSG = "the reply address must be on the sender's own host (an IP address, another port is fine)"


def reply_family_error(target: ReplyTo, version: int) -> str | None:
    """Why the daemon cannot send to ``target`` from its socket (an IPv6 address from an IPv4 daemon, or the
    reverse), or None. ``localhost`` suits both."""
    t = None if target.host == "localhost" else host_ip(target.host)
    if t is None or t.version == version:
        return None
    return (f"the reply address {target.host[:60]} is IPv{t.version} but this daemon listens on IPv{version} "
            f"(aiedit serve --host {'::1' if t.version == 6 else '127.0.0.1'} to use IPv{t.version})")


def new_status(
    job: Job, *, model: str, created: float | None = None, client_path: str | None = None
) -> dict[str, Any]:
    """The first ``status.json`` of an accepted (or refused-with-id) job; fields as in docs/protocol.md."""
    now = time.time()
    p = job.params
    r = job.request.region
    return {
        "version": VERSION,
        "id": job.id,
        "label": job.label,
        "state": "queued",
        "stage": "queued",
        "progress": 0.0,
        "error": None,
        "priority": job.priority,
        "prompt": p.prompt,
        "mode": p.mode,
        "model": model,
        "seed": p.seed,
        "source": {
            "path": client_path if client_path is not None else job.source_path,
            "start": r.start,
            "length": r.length,
        },
        "sample_rate": None,
        "channels": None,
        "frames": None,
        "takes": [],
        "best": None,
        "worker": None,
        "created": created if created is not None else now,
        "updated": now,
    }


def refused_status(obj: dict[str, Any], job_id: str, message: str, *, model: str) -> dict[str, Any]:
    """``state: failed`` for a job refused with a valid id; echoes what could be read of it."""
    now = time.time()
    src = obj.get("source") if isinstance(obj.get("source"), dict) else {}

    def text(v: object) -> str | None:
        return v[:MAX_LABEL] if isinstance(v, str) else None

    return {
        "version": VERSION,
        "id": job_id,
        "label": text(obj.get("label")),
        "state": "failed",
        "stage": "failed",
        "progress": 0.0,
        "error": message,
        "priority": text(obj.get("priority")) or "interactive",
        "prompt": text(obj.get("prompt")),
        "mode": text(obj.get("mode")) or "lora",
        "model": model,
        "seed": obj.get("seed") if _whole(obj.get("seed")) is not None else None,
        "source": {
            "path": text(src.get("path")),
            "start": src.get("start") if _is_number(src.get("start")) else 0.0,
            "length": src.get("length") if _is_number(src.get("length")) else None,
        },
        "sample_rate": None,
        "channels": None,
        "frames": None,
        "takes": [],
        "best": None,
        "created": now,
        "updated": now,
    }


def take_name(eta: float, used: set[str]) -> str:
    """``eta0.30.wav``; a repeated η in one job gets ``eta0.30-2.wav`` so no take overwrites another."""
    base = f"eta{eta:.2f}"
    name, n = f"{base}.wav", 1
    while name in used:
        n += 1
        name = f"{base}-{n}.wav"
    used.add(name)
    return name


# -- small typed readers: "wrong types of known fields are errors" -------------------------------------------


def _is_number(x: object) -> bool:
    """A finite JSON number that converts to a float (a 400-digit integer does not: OverflowError)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return False
    if isinstance(x, int):
        return -MAX_INT <= x <= MAX_INT
    return math.isfinite(x)


def _whole(x: object) -> int | None:
    """An integer, accepting whole floats (``42.0``) because some Lua JSON encoders write every number that
    way."""
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return x if -MAX_INT <= x <= MAX_INT else None
    if isinstance(x, float) and math.isfinite(x) and x.is_integer() and abs(x) <= MAX_INT:
        return int(x)
    return None


def _number(value: object, name: str, *, default: float | None) -> float | None:
    if value is None:
        return default
    if not _is_number(value):
        raise InputError(f"{name} must be a number, got {_clip(value)}")
    return float(value)  # type: ignore[arg-type]


def _integer(value: object, name: str, *, default: int | None) -> int | None:
    if value is None:
        return default
    v = _whole(value)
    if v is None:
        raise InputError(f"{name} must be a whole number, got {_clip(value)}")
    return v


def _string(value: object, name: str, *, default: str | None) -> str | None:
    if value is None:
        return default
    if not isinstance(value, str):
        raise InputError(f"{name} must be a string, got {_clip(value)}")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as inf, which JSON cannot hold: refuse it anywhere
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json_type(obj: object) -> str:
    return {
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(obj), type(obj).__name__)


def _clip(value: object, n: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
