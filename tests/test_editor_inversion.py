"""The editor with an inverted stage-3 start and in zeta mode, end to end on the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_clip

from engine.cache import StageCache
from engine.editor import Editor
from engine.params import EditParams, EditRequest, Inpaint, Region

FAST = dict(embed_steps=3, tune_steps=3, sample_steps=4)


@pytest.fixture(scope="module")
def editor(tiny_model):
    return Editor(tiny_model, None, StageCache())


def test_inverted_start_reuses_the_cached_stages_and_changes_the_takes(editor, tmp_path):
    src = tmp_path / "in.wav"
    write_clip(src, seconds=1.0, sr=16000, channels=1)
    events: list = []
    noise = editor.edit(EditRequest(str(src), Region(), EditParams("a bell", etas=(0.0, 1.0), **FAST)))
    inv = editor.edit(EditRequest(str(src), Region(), EditParams("a bell", etas=(0.0, 1.0), start="inversion",
                                                                 **FAST)), progress=events.append)
    assert inv.cache_hit  # the start is a stage-3 setting: stages 1-2 come from the cache
    assert "inverting" in {p.stage for p in events} and inv.params["start"] == "inversion"
    assert not np.array_equal(noise.takes[0].audio, inv.takes[0].audio)


def test_zeta_mode_gives_one_aligned_take_per_strength_without_training(editor, tmp_path):
    src = tmp_path / "in.wav"
    original = write_clip(src, seconds=1.5, sr=48000, channels=2)
    before = src.read_bytes()
    events: list = []
    res = editor.edit(EditRequest(str(src), Region(), EditParams("rain", etas=(0.2, 0.9), mode="zeta",
                                                                 sample_steps=8)), progress=events.append)
    assert src.read_bytes() == before
    stages = {p.stage for p in events}
    assert {"inverting", "sampling", "decoding"} <= stages and not {"embedding", "finetune"} & stages
    assert len(res.takes) == 2 and not res.cache_hit
    for take in res.takes:
        assert take.audio.shape == original.shape and np.isfinite(take.audio).all()
    assert not np.array_equal(res.takes[0].audio, res.takes[1].audio)
    assert "invert" in res.timings


def test_zeta_inpainting_is_bit_identical_outside_the_range(editor, tmp_path):
    src = tmp_path / "in.wav"
    original = write_clip(src, seconds=2.0, sr=48000, channels=2)
    res = editor.edit(EditRequest(str(src), Region(), EditParams("a door knock", etas=(1.0,), mode="zeta",
                                                                 sample_steps=4, inpaint=Inpaint(0.5, 1.25),
                                                                 source_prompt="a tone")))
    a, b = 24000, 60000
    y = res.takes[0].audio.astype(np.float64)
    assert np.array_equal(y[:a], original[:a]) and np.array_equal(y[b:], original[b:])
