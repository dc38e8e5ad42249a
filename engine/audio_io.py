"""Reading source audio and writing takes, without ever touching the source file.

Takes are written to a temporary name in the destination folder and renamed into place, so a reader (REAPER,
the daemon's status) never sees half a file. No torch here: the daemon probes files on its answering path.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from engine.errors import InputError
from engine.params import EditRequest, Inpaint, Region


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def probe(path: str | os.PathLike[str]) -> AudioInfo:
    """Header facts of an audio file, or :class:`InputError` saying why it cannot be used."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"audio file not found: {p}")
    if not p.is_file():
        raise InputError(f"not a file: {p}")
    try:
        info = sf.info(str(p))
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise InputError(f"cannot read {p.name} as audio ({_short(exc)})") from None
    if info.frames <= 0:
        raise InputError(f"{p.name} holds no audio")
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames))


@dataclass(frozen=True)
class SourceAudio:
    """A region already read: ``samples`` (frames, channels) float32 at ``sample_rate``. What the editor edits when
    its caller has read (and checked) the audio itself, so the edit cannot see other samples than were checked."""

    samples: np.ndarray
    sample_rate: int

    @property
    def frames(self) -> int:
        return int(self.samples.shape[0])

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])


Check = Callable[[AudioInfo, int], None]  # (the header's facts, the region's frame count): raise to refuse


def read_source(source: str | os.PathLike[str] | int | BinaryIO, region: Region, check: Check | None = None, *,
                name: str | None = None) -> SourceAudio:
    """Read ``region`` of ``source`` (a path, an open descriptor or a binary file object) in one pass: the header is
    parsed once, ``check`` sees its facts and the region's frame count before any sample is read, and exactly that
    many frames are read through the same handle, so a file rewritten meanwhile cannot enlarge the read (a file
    shortened meanwhile fails it). Float32: what the takes are written in, and half the memory of float64.

    InputError when the source is not readable audio, the region falls outside it, or it changed while read.
    A descriptor or file object is left open, at an unspecified offset."""
    label = name or (Path(source).name if isinstance(source, (str, os.PathLike)) else "the source")
    target = os.fspath(source) if isinstance(source, os.PathLike) else source
    try:
        f = sf.SoundFile(target, "r", closefd=False) if isinstance(target, int) else sf.SoundFile(target, "r")
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as exc:
        raise InputError(f"cannot read {label} as audio ({_short(exc)})") from None
    with f:
        info = AudioInfo(int(f.samplerate), int(f.channels), int(f.frames))
        if info.frames <= 0 or info.sample_rate <= 0 or info.channels <= 0:
            raise InputError(f"{label} holds no audio")
        start, count = region_frames(info, region)
        if check is not None:
            check(info, count)
        try:
            if start:
                f.seek(start)
            data = f.read(count, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
            raise InputError(f"cannot read {label} ({_short(exc)})") from None
    if data.shape != (count, info.channels):
        raise InputError(f"{label} changed while it was read: {data.shape[0]} of {count} frames")
    if not np.all(np.isfinite(data)):
        np.nan_to_num(data, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
    return SourceAudio(data, info.sample_rate)


def region_frames(info: AudioInfo, region: Region) -> tuple[int, int]:
    """(first frame, frame count) of ``region`` in a file, or :class:`InputError` if it falls outside."""
    # compared in seconds before multiplying: 1e305 s x the rate would overflow to inf, and round(inf) raises
    if region.start >= info.seconds or (start := round(region.start * info.sample_rate)) >= info.frames:
        raise InputError(f"the region starts at {_secs(region.start)} s, after the end of the file "
                         f"({info.seconds:.3f} s)")
    if region.length is None:
        count = info.frames - start
    else:
        if region.length > info.seconds + 1.0:
            raise InputError(f"the region {_secs(region.start)}+{_secs(region.length)} s runs past the end of the file "
                             f"({info.seconds:.3f} s)")
        count = round(region.length * info.sample_rate)
        if start + count > info.frames + 1:  # one frame of rounding slack
            raise InputError(f"the region {region.start:.3f}+{region.length:.3f} s runs past the end of the file "
                             f"({info.seconds:.3f} s)")
        count = min(count, info.frames - start)
    if count <= 0:
        raise InputError("the region is empty")
    return start, count


def check_request(request: EditRequest) -> AudioInfo:
    """Everything about a request that can be checked without a model: audio, region, inpaint range."""
    request.validate()
    info = probe(request.source)
    _, count = region_frames(info, request.region)
    check_inpaint(request.params.inpaint, count, info.sample_rate)
    return info


def check_inpaint(inp: Inpaint | None, frames: int, sample_rate: int) -> None:
    """The inpaint range must lie inside the region (``frames`` long at ``sample_rate``) and cover at least one
    sample once rounded to samples, as the editor will round it (so a job is refused up front, not after the
    model has loaded)."""
    if inp is None:
        return
    length = frames / sample_rate
    if inp.start >= length or inp.end > length + 1.0 / sample_rate:
        raise InputError(f"the inpaint range {_secs(inp.start)}-{_secs(inp.end)} s lies outside the clip "
                         f"({length:.3f} s long)")
    if min(frames, round(inp.end * sample_rate)) <= round(inp.start * sample_rate):
        raise InputError(f"the inpaint range {inp.start:.6g}-{inp.end:.6g} s is shorter than one sample at "
                         f"{sample_rate} Hz")


def read_region(path: str | os.PathLike[str], region: Region) -> SourceAudio:
    """The region of the file at ``path`` (see :func:`read_source`), opened once, read-only."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"audio file not found: {p}")
    if not p.is_file():
        raise InputError(f"not a file: {p}")
    return read_source(p, region)


def write_wav_atomic(path: str | os.PathLike[str], audio: np.ndarray, sample_rate: int) -> Path:
    """Write 32-bit float WAV via a temporary file in the same folder, then rename into place.

    32-bit float keeps 16- and 24-bit sources sample-exact and never clips an edit that got louder.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".partial-", suffix=".wav", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            sf.write(fh, np.asarray(audio, dtype=np.float32), sample_rate, format="WAV", subtype="FLOAT")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a take should read like any file the user saves
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import, before any worker thread exists
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _secs(x: float) -> str:
    """Seconds for a message: three decimals, or three digits when huge (``1e+305``, not 306 digits)."""
    return f"{x:.3f}" if abs(x) < 1e6 else f"{x:.3g}"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]
