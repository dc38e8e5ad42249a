"""What a model hears of the input's channels, and how its takes map back onto them.

A file says its layout only by its channel count here (soundfile does not give the WAVE channel mask), so the
counts read as WAVE_FORMAT_EXTENSIBLE's default layouts, as ffmpeg and libsndfile read them: 3 = L R C, 4 = quad
(L R Ls Rs), 5 = 5.0 (L R C Ls Rs), 6 = 5.1 (L R C LFE Ls Rs), 7 = 6.1 (L R C LFE Cs Ls Rs), 8 = 7.1 (L R C LFE
Lb Rb Ls Rs). To stereo they fold as ITU-R BS.775 downmixes do: centre and surrounds at −3 dB (0.707) into their
side, a back centre at −6 dB into both, the LFE left out, and the matrix scaled so that no output can clip (its
largest row sums to 1, ffmpeg's default). Before issue 25 the channels were folded even → left and odd → right: the
centre of a 5.1 file went left only and its LFE right only. Other counts keep that fold. Takes map back by role:
left-side channels get the left take, right-side ones the right, centre, LFE and back centre the mid (L + R) / 2.
"""

from __future__ import annotations

import numpy as np

_C = float(np.sqrt(0.5))  # −3 dB
# (left gain, right gain) per channel, by channel count
_LAYOUTS: dict[int, list[tuple[float, float]]] = {
    3: [(1, 0), (0, 1), (_C, _C)],
    4: [(1, 0), (0, 1), (_C, 0), (0, _C)],
    5: [(1, 0), (0, 1), (_C, _C), (_C, 0), (0, _C)],
    6: [(1, 0), (0, 1), (_C, _C), (0, 0), (_C, 0), (0, _C)],
    7: [(1, 0), (0, 1), (_C, _C), (0, 0), (0.5, 0.5), (_C, 0), (0, _C)],
    8: [(1, 0), (0, 1), (_C, _C), (0, 0), (_C, 0), (0, _C), (_C, 0), (0, _C)],
}


def downmix_matrix(channels: int) -> np.ndarray:
    """(channels, 2) gains from the input's channels to stereo (rows: input channels)."""
    if channels == 1:
        return np.ones((1, 2))
    if channels == 2:
        return np.eye(2)
    if channels in _LAYOUTS:
        m = np.asarray(_LAYOUTS[channels], dtype=np.float64)
        return m / m.sum(axis=0).max()
    m = np.zeros((channels, 2))  # an unknown layout: the old fold, even channels left and odd right, averaged
    m[0::2, 0] = 1 / len(range(0, channels, 2))
    m[1::2, 1] = 1 / len(range(1, channels, 2))
    return m


def to_model_channels(data: np.ndarray, channels: int, dtype: type | None = None) -> np.ndarray:
    """(frames, C_in) → what a model with ``channels`` hears: (frames,) mono, or (frames, 2) stereo (mono
    duplicated, more channels downmixed as the module docstring says). Mono and stereo inputs are unchanged from
    before: a stereo file's mono mix is the mean of its two channels. ``dtype``: of the result and of the mixing
    sums (a float32 source mixed in float64, say); a new array whenever it differs from the input's."""
    dt = np.dtype(dtype or data.dtype)
    n_in = data.shape[1]
    if channels == 1:
        if n_in <= 2:
            return data.mean(axis=1, dtype=dt)
        return (data.astype(dt, copy=False) @ downmix_matrix(n_in).astype(dt)).mean(axis=1)
    if n_in == channels:
        return data.astype(dt, copy=False)
    if n_in == 1:
        return np.repeat(data.astype(dt, copy=False), channels, axis=1)
    return data.astype(dt, copy=False) @ downmix_matrix(n_in).astype(dt)


def to_input_channels(y: np.ndarray, channels: int) -> np.ndarray:
    """A model's (frames,) or (frames, 2) output → (frames, channels), the inverse of :func:`to_model_channels`."""
    if y.ndim == 1:
        return np.repeat(y[:, None], channels, axis=1)
    if y.shape[1] == channels:
        return y
    if channels == 1:
        return y.mean(axis=1, keepdims=True)
    if channels in _LAYOUTS:
        gains = np.asarray(_LAYOUTS[channels], dtype=np.float64)
        left, right = gains[:, 0] > 0, gains[:, 1] > 0
        mid = 0.5 * (y[:, 0] + y[:, 1])
        out = np.empty((len(y), channels), dtype=y.dtype)
        for k in range(channels):
            out[:, k] = y[:, 0] if left[k] and not right[k] else y[:, 1] if right[k] and not left[k] else mid
        return out
    return y[:, np.arange(channels) % y.shape[1]]
