"""engine/pictures.py: spectrogram PNGs for clients (docs/protocol.md, ``input_spectrogram`` / ``spectrogram``)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest

from engine.pictures import MAX_BYTES, png_bytes, reference_db, spectrogram_db, spectrogram_png


def decode_png(data: bytes) -> np.ndarray:
    """A small independent PNG reader (8-bit grey/RGB, filters 0-4): checks every chunk's CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr, seen_end = 8, b"", None, False
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            seen_end = True
        pos += 12 + n
    assert ihdr and seen_end and pos == len(data)
    w, h, depth, colour, _, _, interlace = ihdr
    assert depth == 8 and colour in (0, 2) and interlace == 0
    bpp = 3 if colour == 2 else 1
    raw = zlib.decompress(idat)
    stride = w * bpp
    assert len(raw) == h * (stride + 1)
    out = np.zeros((h, stride), dtype=np.int64)
    for y in range(h):
        f, line = raw[y * (stride + 1)], np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int64)
        prev = out[y - 1] if y else np.zeros(stride, np.int64)
        if f == 0:
            out[y] = line
        elif f == 2:
            out[y] = (line + prev) % 256
        else:
            raise AssertionError(f"filter {f} not expected from png_bytes")
    return out.astype(np.uint8).reshape(h, w, bpp) if bpp == 3 else out.astype(np.uint8)


def test_png_bytes_round_trip_grey_and_rgb():
    rng = np.random.default_rng(0)
    for img in (rng.integers(0, 256, (5, 7), dtype=np.uint8), rng.integers(0, 256, (4, 9, 3), dtype=np.uint8)):
        np.testing.assert_array_equal(decode_png(png_bytes(img)), img)
    with pytest.raises(ValueError):
        png_bytes(np.zeros((3, 3), dtype=np.float32))


def test_pillow_reads_it_too():
    image = pytest.importorskip("PIL.Image")
    sr = 48000
    t = np.arange(sr) / sr
    data = spectrogram_png(np.stack([np.sin(2 * np.pi * 440 * t)] * 2, axis=1), sr)
    with image.open(io.BytesIO(data)) as im:
        assert im.size == (256, 64) and im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), decode_png(data))


def test_a_tone_is_a_bright_row_at_its_height():
    sr = 44100
    t = np.arange(2 * sr) / sr
    db = spectrogram_db(np.sin(2 * np.pi * 1000 * t), sr)
    assert db.shape == (64, 256)
    peak_rows = db.argmax(axis=0)
    assert np.all(peak_rows == peak_rows[0])  # the same row in every column
    rows = np.geomspace(30.0, sr / 2, 64)[::-1]  # row 0 = the highest frequency
    assert abs(np.log(rows[peak_rows[0]] / 1000)) < np.log(rows[0] / rows[1])  # within one row of 1 kHz
    # a louder take of the same tone on the input's scale is brighter, a quiet one darker
    ref = reference_db(np.sin(2 * np.pi * 1000 * t), sr)
    loud = decode_png(spectrogram_png(np.sin(2 * np.pi * 1000 * t), sr, top_db=ref)).sum()
    quiet = decode_png(spectrogram_png(0.01 * np.sin(2 * np.pi * 1000 * t), sr, top_db=ref)).sum()
    assert loud > quiet


@pytest.mark.parametrize("seconds,sr,channels", [(0.01, 16000, 1), (3.0, 48000, 2), (120.0, 44100, 2)])
def test_any_input_gives_a_valid_picture_of_bounded_size(seconds, sr, channels):
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((round(seconds * sr), channels))  # noise: the worst case for compression
    noise[::97] = np.nan  # non-finite samples read as silence, never break the picture
    data = spectrogram_png(noise, sr)
    assert len(data) <= MAX_BYTES
    img = decode_png(data)
    assert img.shape[0] == 64 and img.shape[2] == 3 and 8 <= img.shape[1] <= 256


def test_a_tight_bound_narrows_the_picture_and_silence_is_dark():
    rng = np.random.default_rng(2)
    data = spectrogram_png(rng.standard_normal(48000 * 5), 48000, max_bytes=12000)
    assert len(data) <= 12000 and decode_png(data).shape[1] < 256
    dark = decode_png(spectrogram_png(np.zeros(48000), 48000))
    assert (dark == dark[0, 0]).all() and int(dark[0, 0].sum()) < 100  # all one dark colour


def test_job_pictures_share_one_scale_and_a_bad_picture_never_fails_a_job(caplog):
    from bridge.workers.local import make_pictures
    from engine.pictures import job_pictures

    sr = 16000
    t = np.arange(sr) / sr
    quiet, loud = 0.01 * np.sin(2 * np.pi * 500 * t), np.sin(2 * np.pi * 500 * t)
    inp, takes = job_pictures(quiet[:, None], [loud[:, None], quiet[:, None]], sr)
    assert inp is not None and len(takes) == 2
    assert decode_png(takes[0]).sum() > decode_png(takes[1]).sum()  # one scale: the louder take is brighter
    assert decode_png(inp).tobytes() == decode_png(takes[1]).tobytes()  # same audio, same picture
    assert job_pictures(None, [loud], sr)[0] is None
    assert make_pictures(loud, [np.zeros((2, 2, 2))], sr, "job-1") is None  # logged, the takes still go out
    assert "job job-1: no spectrogram pictures" in caplog.text
