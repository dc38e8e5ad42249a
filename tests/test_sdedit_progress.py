"""Issue 25: multi-strength SDEdit's progress. The engine reports sampling once from 1 to its total whether the
strengths share one loop (the AudioLDM family: takes join at their start step) or run one loop each (flow models);
the daemon's bar (``bridge.workers.local.ProgressMap``) used to divide the first loop by the strength count, so on a
shared loop it stalled at 1/n of sampling and jumped at decoding."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from bridge.workers.local import ProgressMap
from engine.editor import Editor
from engine.models.audioldm import tiny_audioldm
from engine.models.stable_audio3 import tiny_stable_audio3
from engine.params import EditParams, EditRequest


@pytest.mark.parametrize("make", [tiny_audioldm, tiny_stable_audio3], ids=["shared loop", "loop per strength"])
def test_sdedit_sampling_progress_runs_once_to_its_end_and_the_bar_follows(tmp_path, make):
    ed = Editor(make())
    sr = ed.model.sample_rate
    sf.write(tmp_path / "c.wav", 0.3 * np.sin(2 * np.pi * 330 * np.arange(sr // 2) / sr), sr)
    params = EditParams("a bell", mode="sdedit", etas=(0.3, 0.6, 0.9), sample_steps=4)
    reports = []
    ed.edit(EditRequest(str(tmp_path / "c.wav"), params=params), progress=reports.append)
    sampling = [(r.step, r.total) for r in reports if r.stage == "sampling"]
    steps = [s for s, _ in sampling]
    assert steps == sorted(steps) and sampling[-1][0] == sampling[-1][1], sampling
    pm = ProgressMap(ed.resolve_params(params), loading=False)
    bar = [pm(r)[1] for r in reports]
    assert bar == sorted(bar)
    last_sampling = max(i for i, r in enumerate(reports) if r.stage == "sampling")
    first_decoding = next(i for i, r in enumerate(reports) if r.stage == "decoding")
    assert bar[first_decoding] - bar[last_sampling] < 1e-9  # sampling's share is full before decoding starts
