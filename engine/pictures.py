"""Small spectrogram pictures (PNG) of audio, so a client shows what changed before anyone listens.

The daemon writes one of the input region and one per take, next to the takes (docs/protocol.md:
``input_spectrogram``, per take ``spectrogram``); the REAPER jobs window shows them beside each take. Pure numpy,
zlib and struct: no imaging library. The picture is a log-magnitude spectrogram on a log-frequency axis (low
frequencies at the bottom), mixed to mono, in a dark-to-bright colour ramp; every picture of one job uses the same
dB range when given the same ``top_db`` reference, so takes compare fairly with the input.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

MAX_BYTES = 64 * 1024  # docs/protocol.md: each picture is at most this large
WIDTH, HEIGHT = 256, 64
DYNAMIC_RANGE_DB = 80.0
FMIN = 30.0
SILENCE_DB = -60.0  # a picture whose loudest bin is below this is drawn on this scale (a full-scale tone is ~+54)

# dark blue -> purple -> orange -> pale yellow: readable on the dark and the light themes of REAPER
_RAMP = np.array([[8, 8, 24], [60, 16, 100], [150, 40, 110], [230, 100, 50], [250, 200, 80], [255, 250, 210]],
                 dtype=np.float64)


def _mono(audio: np.ndarray) -> np.ndarray:
    """(frames,) float64 from (frames,) or (frames, channels); non-finite samples read as silence."""
    a = np.asarray(audio, dtype=np.float64)
    if a.ndim == 2:
        a = a.mean(axis=1)
    elif a.ndim != 1:
        raise ValueError(f"audio must be (frames,) or (frames, channels), got shape {a.shape}")
    return np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)


def spectrogram_db(audio: np.ndarray, sample_rate: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """(height, width) magnitudes in dB (row 0 = the highest frequency): ``width`` Hann-windowed frames spread
    evenly over the audio, each resampled onto ``height`` log-spaced frequencies from FMIN to Nyquist."""
    if sample_rate <= 0 or width < 1 or height < 2:
        raise ValueError("sample_rate, width and height must be positive (height at least 2)")
    x = _mono(audio)
    n_fft = int(2 ** round(np.log2(max(64.0, sample_rate * 0.046))))  # ~46 ms: 2048 at 44.1/48 kHz
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    starts = np.linspace(0, x.size - n_fft, width).round().astype(np.int64)
    frames = x[starts[:, None] + np.arange(n_fft)[None, :]] * np.hanning(n_fft)[None, :]
    mag = np.abs(np.fft.rfft(frames, axis=1))  # (width, n_fft // 2 + 1)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    nyquist = sample_rate / 2.0
    rows = np.geomspace(min(FMIN, nyquist / 2), nyquist, height)
    # each row: the strongest bin between its neighbours' midpoints (thin partials stay visible when bins are many)
    edges = np.sqrt(rows[:-1] * rows[1:])
    lo = np.searchsorted(freqs, np.concatenate([[rows[0]], edges]), side="left")
    hi = np.searchsorted(freqs, np.concatenate([edges, [nyquist + 1]]), side="right")
    hi = np.maximum(hi, lo + 1)
    out = np.empty((height, width))
    for r in range(height):
        out[r] = mag[:, lo[r]:hi[r]].max(axis=1)
    return (20.0 * np.log10(np.maximum(out, 1e-10)))[::-1]


def colourise(db: np.ndarray, top_db: float | None = None, dynamic_range: float = DYNAMIC_RANGE_DB) -> np.ndarray:
    """(H, W, 3) uint8 from dB values: ``top_db`` (default: the picture's own maximum) is the brightest, anything
    ``dynamic_range`` dB below it black."""
    top = max(float(np.max(db)) if top_db is None else float(top_db), SILENCE_DB)  # silence stays dark
    level = np.clip((db - (top - dynamic_range)) / dynamic_range, 0.0, 1.0)
    pos = level * (len(_RAMP) - 1)
    i = np.minimum(pos.astype(np.int64), len(_RAMP) - 2)
    frac = (pos - i)[..., None]
    rgb = _RAMP[i] * (1.0 - frac) + _RAMP[i + 1] * frac
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bytes(image: np.ndarray) -> bytes:
    """Encode (H, W) grey or (H, W, 3) RGB uint8 as a PNG: 8 bits per sample, no interlace, each row filtered "Up"
    (filter type 2) against the one above, which suits spectrograms (rows change slowly)."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError("image must be uint8 (H, W) or (H, W, 3)")
    h, w = img.shape[:2]
    if h < 1 or w < 1:
        raise ValueError("image must not be empty")
    colour = 2 if img.ndim == 3 else 0
    rows = img.reshape(h, -1).astype(np.int16)
    up = np.empty_like(rows)
    up[0] = rows[0]
    up[1:] = (rows[1:] - rows[:-1]) % 256
    raw = np.concatenate([np.full((h, 1), 2, dtype=np.uint8), up.astype(np.uint8)], axis=1)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 9))
            + _chunk(b"IEND", b""))


def spectrogram_png(audio: np.ndarray, sample_rate: int, *, top_db: float | None = None,
                    width: int = WIDTH, height: int = HEIGHT, max_bytes: int = MAX_BYTES) -> bytes:
    """The spectrogram picture as PNG bytes, at most ``max_bytes``: a picture that would be larger (noise
    compresses badly) is made narrower until it fits."""
    db = spectrogram_db(audio, sample_rate, width, height)
    while True:
        data = png_bytes(colourise(db, top_db))
        if len(data) <= max_bytes or db.shape[1] <= 8:
            break
        db = spectrogram_db(audio, sample_rate, max(8, db.shape[1] // 2), height)
    if len(data) > max_bytes:
        raise ValueError(f"a {db.shape[1]}x{height} picture does not fit in {max_bytes} bytes")
    return data


def reference_db(audio: np.ndarray, sample_rate: int) -> float:
    """The loudest dB value of ``audio``'s spectrogram: pass it as ``top_db`` to every picture of one job so the
    takes and the input share one scale."""
    return float(np.max(spectrogram_db(audio, sample_rate)))


Pictures = tuple[bytes | None, list[bytes | None]]  # the input's picture (None when unknown) and one per take


def job_pictures(input_audio: np.ndarray | None, takes: list[np.ndarray], sample_rate: int) -> Pictures:
    """The input region's picture and one per take, all on one dB scale (the loudest of them is the brightest), so
    a take that got louder or quieter than the input shows it. ``input_audio`` None: the takes only."""
    audios = ([input_audio] if input_audio is not None else []) + list(takes)
    if not audios:
        return None, []
    top = max(reference_db(a, sample_rate) for a in audios)
    pngs: list[bytes | None] = [spectrogram_png(a, sample_rate, top_db=top) for a in audios]
    if input_audio is None:
        return None, pngs
    return pngs[0], pngs[1:]
