"""The editor end to end on the tiny model: alignment, inpainting splice, windows, cache, seeds, cancel."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_clip

from engine.cache import StageCache
from engine.editor import Editor
from engine.errors import Cancelled, InputError
from engine.params import EditParams, EditRequest, Inpaint, Region
from engine.progress import CancelToken

FAST = dict(embed_steps=4, tune_steps=4, sample_steps=4)


@pytest.fixture(scope="module")
def editor(tiny_model):
    return Editor(tiny_model, None, StageCache())


def test_inpainting_48k_stereo_is_bit_identical_outside_the_range(editor, tmp_path):
    src = tmp_path / "in.wav"
    original = write_clip(src, seconds=2.0, sr=48000, channels=2)
    before = src.read_bytes()
    req = EditRequest(str(src), Region(), EditParams("a door knock", etas=(0.0, 0.7), inpaint=Inpaint(0.5, 1.25),
                                                     **FAST))
    result = editor.edit(req)
    assert src.read_bytes() == before
    a, b = 24000, 60000
    for take in result.takes:
        assert take.audio.shape == original.shape and result.sample_rate == 48000
        assert np.array_equal(take.audio[:a].astype(np.float64), original[:a])
        assert np.array_equal(take.audio[b:].astype(np.float64), original[b:])
        assert not np.allclose(take.audio[a + 2000:b - 2000], original[a + 2000:b - 2000], atol=1e-3)


def test_whole_clip_edit_keeps_rate_channels_and_length_and_is_reproducible(editor, tmp_path):
    src = tmp_path / "in.wav"
    write_clip(src, seconds=1.37, sr=44100, channels=3, subtype="PCM_16")
    req = EditRequest(str(src), Region(0.2, 1.0), EditParams("a bell", etas=(0.25, 1.0), seed=3, **FAST))
    r1 = editor.edit(req)
    r2 = editor.edit(req)
    assert (r1.sample_rate, r1.channels, r1.frames) == (44100, 3, 44100)
    for t1, t2 in zip(r1.takes, r2.takes, strict=True):
        assert t1.audio.shape == (44100, 3) and np.isfinite(t1.audio).all()
        assert np.array_equal(t1.audio, t2.audio)
    assert not np.array_equal(r1.takes[0].audio, r1.takes[1].audio)


def test_cache_hit_skips_stages_one_and_two(tiny_model, tmp_path):
    src = tmp_path / "in.wav"
    write_clip(src, seconds=1.0, sr=16000, channels=1)
    ed = Editor(tiny_model, None, StageCache(tmp_path / "cache"))
    params = EditParams("a whistle", etas=(0.5,), **FAST)
    cold: list = []
    ed.edit(EditRequest(str(src), Region(), params), progress=cold.append)
    assert {"embedding", "finetune"} <= {p.stage for p in cold}
    # A fresh editor on the same disk cache, re-taking with other η: stage 3 only.
    warm: list = []
    ed2 = Editor(tiny_model, None, StageCache(tmp_path / "cache"))
    res = ed2.edit(EditRequest(str(src), Region(), params.with_(etas=(0.2, 0.9))), progress=warm.append)
    assert res.cache_hit
    assert not {"embedding", "finetune"} & {p.stage for p in warm}
    assert "sampling" in {p.stage for p in warm}


def test_long_clip_is_edited_in_crossfaded_windows(tmp_path):
    from engine.models.audioldm import tiny_audioldm

    model = tiny_audioldm(max_seconds=1.0)
    ed = Editor(model, None, StageCache())
    src = tmp_path / "long.wav"
    write_clip(src, seconds=2.6, sr=22050, channels=2)
    events: list = []
    res = ed.edit(EditRequest(str(src), Region(), EditParams("wind", etas=(0.5,), **FAST)), progress=events.append)
    assert res.windows >= 3 and max(p.windows for p in events) == res.windows
    assert res.takes[0].audio.shape == (int(2.6 * 22050), 2)


def test_sdedit_preview_gives_one_take_per_strength(editor, tmp_path):
    src = tmp_path / "in.wav"
    write_clip(src, seconds=1.0, sr=16000, channels=1)
    events: list = []
    res = editor.edit(EditRequest(str(src), Region(), EditParams("rain", etas=(0.3, 0.8), mode="sdedit",
                                                                 sample_steps=10)), progress=events.append)
    assert len(res.takes) == 2 and not {"embedding", "finetune"} & {p.stage for p in events}
    assert not np.array_equal(res.takes[0].audio, res.takes[1].audio)


def test_cancel_stops_between_steps_and_leaves_the_model_clean(editor, tmp_path):
    src = tmp_path / "in.wav"
    write_clip(src, seconds=1.0, sr=16000, channels=1)
    token = CancelToken()
    before = {k: v.clone() for k, v in editor.model.unet.state_dict().items()}

    def on_progress(p):
        if p.stage == "finetune" and p.step == 2:
            token.cancel("user pressed cancel")

    with pytest.raises(Cancelled):
        editor.edit(EditRequest(str(src), Region(), EditParams("x", etas=(0.5,), embed_steps=3, tune_steps=50,
                                                               sample_steps=3)), progress=on_progress,
                    cancel=token)
    after = editor.model.unet.state_dict()
    assert set(before) == set(after) and all(np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(("inpaint", "needle"), [(Inpaint(0.5, 5.0), "outside the clip"),
                                                 (Inpaint(3.0, 3.5), "outside the clip")])
def test_inpaint_range_outside_the_clip_is_refused(editor, tmp_path, inpaint, needle):
    src = tmp_path / "in.wav"
    write_clip(src, seconds=1.0, sr=16000, channels=1)
    with pytest.raises(InputError, match=needle):
        editor.edit(EditRequest(str(src), Region(), EditParams("x", inpaint=inpaint, **FAST)))
