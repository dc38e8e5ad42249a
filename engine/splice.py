"""Time-domain bookkeeping: windows for long clips, equal-power crossfades, and the inpainting splice.

The VAE decoder is global (GroupNorm, attention), so decoded audio differs everywhere from the input even where the
latent was kept. Outside an inpainting range the take therefore takes the input's samples verbatim; the edit is
faded in over short equal-power ramps that lie *inside* the range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    start: int  # sample offsets in the model-rate signal
    end: int


def plan_windows(total: int, span: tuple[int, int], window: int, overlap: int) -> list[Window]:
    """Windows of at most ``window`` samples covering ``span`` (clamped to [0, total]), overlapping by ``overlap``.

    A span that fits is widened symmetrically to a whole window where the clip allows, giving the model context.
    """
    a, b = max(0, span[0]), min(total, span[1])
    if b - a <= window:
        grow = min(window, total) - (b - a)
        a = max(0, a - grow // 2)
        b = min(total, a + min(window, total))
        a = max(0, b - min(window, total))
        return [Window(a, b)]
    hop = window - overlap
    count = int(np.ceil((b - a - overlap) / hop))
    starts = np.linspace(a, b - window, count).round().astype(int)
    return [Window(int(s), int(s) + window) for s in starts]


def equal_power(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(fade-out, fade-in) gains whose squares sum to 1: keeps loudness when the two signals are unrelated."""
    x = (np.arange(n) + 0.5) / max(n, 1)
    return np.cos(0.5 * np.pi * x), np.sin(0.5 * np.pi * x)


def equal_gain(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(fade-out, fade-in) raised-cosine gains that sum to 1: keeps loudness when the signals are correlated."""
    out, inn = equal_power(n)
    return out**2, inn**2


def overlap_add(pieces: list[tuple[Window, np.ndarray]], total: int) -> np.ndarray:
    """Join windowed results, crossfading each overlap with equal-gain ramps (float64; see :class:`OverlapAdd`)."""
    acc = OverlapAdd(total, pieces[0][1].shape[1:], np.float64)
    for win, audio in pieces:
        acc.add(win, audio)
    return acc.out


class OverlapAdd:
    """:func:`overlap_add` one window at a time, in window order, into one buffer (``out``): a long clip's windows
    need not all be held until the last one is done.

    Overlapping windows are edits of the same input, so their content is correlated (nearly identical at low η):
    equal-power gains would add to +3 dB mid-overlap, equal-gain ones keep the level.
    """

    def __init__(self, total: int, tail: tuple[int, ...] = (), dtype: type = np.float32) -> None:
        self.out = np.zeros((total, *tail), dtype=dtype)  # (total,) or (total, channels)
        self.covered_to: int | None = None

    def add(self, win: Window, audio: np.ndarray) -> None:
        out, seg = self.out, audio[: win.end - win.start]
        if self.covered_to is None or self.covered_to <= win.start:
            out[win.start:win.end] = seg
        else:
            n = self.covered_to - win.start
            fade_out, fade_in = (g.reshape(-1, *([1] * (seg.ndim - 1))) for g in equal_gain(n))
            out[win.start:self.covered_to] = out[win.start:self.covered_to] * fade_out + seg[:n] * fade_in
            out[self.covered_to:win.end] = seg[n:]
        self.covered_to = win.end


def splice(original: np.ndarray, edit: np.ndarray, start: int, end: int, fade: int) -> np.ndarray:
    """The original (frames, channels) with [start, end) replaced by ``edit`` (frames,) or (frames, channels).

    Ramps of ``fade`` samples at both edges sit inside [start, end): every sample outside is the original's.
    """
    out = original.copy()
    edit2 = edit if edit.ndim == 2 else np.repeat(edit[:, None], original.shape[1], axis=1)
    n = end - start
    fade = max(0, min(fade, n // 2))
    seg = edit2[start:end].astype(np.float64)
    gain = np.ones(n)
    if fade:
        _, fade_in = equal_power(fade)
        gain[:fade] = fade_in
        gain[n - fade:] = fade_in[::-1]
    g = gain[:, None]
    keep = np.sqrt(np.clip(1 - g**2, 0, 1))
    out[start:end] = original[start:end] * keep + seg * g
    return out
