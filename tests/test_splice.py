"""Windows and crossfades: coverage, level through overlaps, and the inpainting splice."""

from __future__ import annotations

import itertools

import numpy as np

from engine.splice import overlap_add, plan_windows, splice


def test_windows_cover_the_span_and_stay_inside_the_clip():
    for total, span in [(300_000, (0, 300_000)), (50_000, (0, 50_000)), (300_000, (250_000, 290_000)),
                        (300_000, (0, 10_000))]:
        wins = plan_windows(total, span, 163_840, 16_000)
        assert wins[0].start <= span[0] and wins[-1].end >= span[1]
        assert all(0 <= w.start < w.end <= total and w.end - w.start <= 163_840 for w in wins)
        assert all(b.start < a.end for a, b in itertools.pairwise(wins))  # overlapping, no gaps


def test_overlapping_windows_of_the_same_audio_keep_its_level():
    total = 300_000
    signal = np.sin(np.arange(total) * 0.01)
    wins = plan_windows(total, (0, total), 163_840, 16_000)
    joined = overlap_add([(w, signal[w.start:w.end]) for w in wins], total)
    assert np.allclose(joined, signal, atol=1e-9)  # no +3 dB bump where windows overlap


def test_splice_keeps_every_sample_outside_the_range():
    rng = np.random.default_rng(0)
    original = rng.standard_normal((1000, 2))
    edit = rng.standard_normal(1000)
    out = splice(original, edit, 300, 700, fade=50)
    assert np.array_equal(out[:300], original[:300]) and np.array_equal(out[700:], original[700:])
    assert np.allclose(out[350:650], np.repeat(edit[350:650, None], 2, axis=1))
