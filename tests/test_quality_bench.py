"""The quality benchmark's own arithmetic: cases, onset kept/added scores, intervals (no model needed)."""

from __future__ import annotations

import math

import numpy as np

from benchmarks.quality import ci, make_cases, onset_scores


def test_cases_do_not_depend_on_which_kinds_are_asked_for():
    both = make_cases(2, kinds=("addition", "style"))
    alone = make_cases(2, kinds=("style",))
    assert [c.kind for c in both] == ["addition", "style", "addition", "style"]
    assert [c.prompt for c in both if c.kind == "style"] == [c.prompt for c in alone]
    assert np.array_equal(both[1].input.wave, alone[0].input.wave)


def test_oracle_targets_keep_the_input_onsets_and_add_new_ones():
    cases = make_cases(4)
    for c in cases:
        _, added = onset_scores(c, c.target.wave)
        if c.kind == "style":
            assert added is None
        if c.kind == "addition":
            assert added is not None and added > 0  # the target really has onsets the input lacks
    add = [c for c in cases if c.kind == "addition"]
    kept_input = [onset_scores(c, c.input.wave) for c in add]
    assert np.mean([k for k, _ in kept_input]) > 0.5  # the input keeps its own onsets ...
    silence = onset_scores(add[0], np.zeros_like(add[0].input.wave))
    assert silence == (0.0, 0.0)  # ... and silence keeps none and adds none


def test_interval_is_the_student_t_half_width():
    m, h = ci([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5 and math.isclose(h, 3.18 * np.std([1, 2, 3, 4], ddof=1) / 2)
    assert math.isnan(ci([0.5])[1])
    assert ci([0.3] * 40) == (0.3, 0.0)
