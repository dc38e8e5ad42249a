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


def _rows(method: str, by_eta: dict[float | None, list[tuple[float, float]]]) -> list[dict]:
    return [dict(case=f"add{i}", kind="addition", method=method, eta=eta, text=t, audio=a, kept=1.0, added=None,
                 wall=0.0, recon_l1=0.0)
            for eta, vals in by_eta.items() for i, (t, a) in enumerate(vals)]


def test_sweep_check_pairs_text_by_case_and_compares_eta0_with_the_round_trip():
    from benchmarks.quality import ROUND_TRIP, paired, sweep_check

    # Text rises by 0.1 on every case (paired: no spread), though the cases' own Texts spread widely
    rising = _rows("ours", {0.0: [(0.1, 0.8), (0.5, 0.9), (0.9, 0.85)], 1.0: [(0.2, 0.3), (0.6, 0.3), (1.0, 0.3)]})
    flat = _rows("flat", {0.0: [(0.3, 0.2), (0.5, 0.1), (0.4, 0.3)], 1.0: [(0.35, 0.2), (0.45, 0.1), (0.4, 0.3)]})
    rt = _rows(ROUND_TRIP, {None: [(0.5, 0.82), (0.5, 0.88), (0.5, 0.85)]})
    d, h, n = paired(rising, "addition", "ours", 0.0, 1.0, "text")
    assert math.isclose(d, 0.1) and h < 1e-9 and n == 3
    lines = sweep_check(rising + flat + rt, ["addition"])
    ours = next(x for x in lines if " ours " in x)
    assert "(3 cases: rises)" in ours and ": inside" in ours
    flat_line = next(x for x in lines if " flat " in x)
    assert "does not rise" in flat_line and ": below" in flat_line
