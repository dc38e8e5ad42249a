"""The shipped toy flow model (Stable Audio 3's classes, trained on the procedural world by
``python -m toyworld.train_flow``) loads offline through the real ``stable-audio-3`` adapter and edits 44.1 kHz
stereo audio. Quality numbers live in ``benchmarks/quality.py`` / docs/quality.md.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from engine.models.registry import SHIPPED, resolve

FOLDER = SHIPPED["toy-flow"][1]
pytestmark = pytest.mark.skipif(not (FOLDER / "model_index.json").exists(),
                                reason="toy-flow weights not trained (python -m toyworld.train_flow)")


@pytest.fixture(scope="module")
def flow_editor():
    from engine.editor import load_editor

    torch.set_num_threads(1)
    return load_editor("toy-flow", device="cpu")


@pytest.fixture(scope="module")
def stereo_clip(tmp_path_factory):
    """A held-out clip of the world rendered at 44.1 kHz in stereo, written as the user's file."""
    from toyworld import world

    clip = world.clip(world.HELD_OUT + 11, sr=44100, stereo=True)
    path = tmp_path_factory.mktemp("in") / "in.wav"
    sf.write(str(path), clip.wave.T, 44100, subtype="FLOAT")
    return clip, path


def test_toy_flow_is_the_sa3_family_on_its_own_folder(flow_editor):
    from engine.params import EditParams

    spec = resolve("toy-flow")
    assert spec.family == "stable-audio-3" and spec.source == str(FOLDER)
    assert json.loads((FOLDER / "model_index.json").read_text())["_class_name"] == "StableAudio3Pipeline"
    m = flow_editor.model
    assert type(m).__name__ == "StableAudio3" and m.name == "toy-flow"
    assert type(m.unet).__name__ == "StableAudio3DiTModel" and type(m.vae).__name__ == "AutoencoderSAME"
    assert type(m.text_encoder).__name__ == "T5GemmaEncoderModel"
    assert (m.sample_rate, m.channels, m.max_seconds) == (44100, 2, pytest.approx(2.56))
    assert "flowedit" in m.modes and "zeta" not in m.modes
    assert flow_editor.scorer is not None  # the toy CLAP
    p = flow_editor.resolve_params(EditParams(prompt="three knocks", mode="lora"))
    assert (p.embed_steps, p.tune_steps, p.sample_steps, p.guidance) == (100, 300, 20, 3.0)
    # each of the world's words is one token of the shipped tokenizer (the space before it another)
    ids = m.tokenizer("three knocks and a bell").input_ids
    assert "knocks" in m.tokenizer.convert_ids_to_tokens(ids) and len(ids) <= 9
    assert sum(p.numel() for p in m.unet.parameters()) + sum(p.numel() for p in m.vae.parameters()) < 7e6
    assert sum(f.stat().st_size for f in FOLDER.rglob("*") if f.is_file()) < 30e6


def test_flowedit_edits_a_stereo_44k_clip_in_its_format(flow_editor, stereo_clip):
    """One FlowEdit request through the real adapter: both takes have the input's rate, channels and length; the
    stronger one moves further from the input. Distances are to the codec's round trip of the input (what a take
    with no edit would be): since issue 25's decoder the codec's own error (log-mel L1 ≈ 0.5 to the clean clip) is
    far larger than what 0.6 vs 0.9 changes, and both takes carry it."""
    from engine.params import EditParams, EditRequest
    from toyworld.distance import logmel_l1
    from toyworld.onsets import SR as SR16

    clip, path = stereo_clip
    params = EditParams(prompt=clip.caption + " and a bell", mode="flowedit", etas=(0.6, 0.9), seed=0)
    res = flow_editor.edit(EditRequest(str(path), params=params))
    assert (res.sample_rate, res.channels, res.frames) == (44100, 2, clip.wave.shape[1])
    assert [t.audio.shape for t in res.takes] == [(clip.wave.shape[1], 2)] * 2
    assert all(np.isfinite(t.audio).all() and t.scores is not None for t in res.takes)

    import soxr

    def mono16(x: np.ndarray) -> np.ndarray:
        return soxr.resample(x.mean(axis=1), 44100, SR16).astype(np.float32)

    from benchmarks.quality import round_trip

    ref = mono16(round_trip(flow_editor.model, clip.wave).T)
    d = [logmel_l1(mono16(t.audio), ref) for t in res.takes]
    assert 0 < d[0] < d[1], d


def test_the_flow_models_scorer_hears_events_not_an_inaudible_noise_floor():
    """The toy flow model's CLAP (``engine/weights/toy_flow_clap``, trained with ``toyworld.train.floor_noise``)
    scores a clip with white noise at -80 dBFS rms added as the same sound, where the first toy CLAP heard it as
    a different one (Audio 1.00 → 0.58 on 24 held-out clips), and it still tells two different clips apart and
    matches a clip's own caption above another clip's."""
    from engine.models.registry import SHIPPED_CLAP
    from engine.scoring import ClapScorer
    from toyworld import world

    cs = world.dataset(6, world.HELD_OUT + 7000, sr=44100, stereo=True)
    rng = np.random.default_rng(0)

    def audio(scorer, take, ref):
        return scorer.score([take.T], 44100, ref.T, "x")[0].audio

    new, old = (ClapScorer.load(str(p)) for p in (SHIPPED_CLAP["toy-flow"], SHIPPED_CLAP["toy"]))
    noisy = [c.wave + 1e-4 * rng.standard_normal(c.wave.shape).astype(np.float32) for c in cs]
    assert min(audio(new, n, c.wave) for n, c in zip(noisy, cs, strict=True)) > 0.95
    assert np.mean([audio(old, n, c.wave) for n, c in zip(noisy, cs, strict=True)]) < 0.9  # why it was retrained
    assert np.mean([audio(new, cs[i].wave, cs[i - 1].wave) for i in range(6)]) < 0.6
    own = [new.score([c.wave.T], 44100, c.wave.T, c.caption)[0].text for c in cs]
    other = [new.score([c.wave.T], 44100, c.wave.T, cs[i - 1].caption)[0].text for i, c in enumerate(cs)]
    assert np.mean(own) > np.mean(other) + 0.3


def test_floor_noise_lifts_silence_and_leaves_loud_cells():
    """``floor_noise`` adds power, never removes it: digital silence (-100 dB) rises to the drawn floor (≤ -45 dB
    plus tilt), cells 40 dB above the highest floor move by a fraction of a dB."""
    from toyworld.train import floor_noise

    feats = torch.full((64, 1, 50, 64), -100.0)
    feats[:, :, :25] = 20.0
    out = floor_noise(feats, torch.Generator().manual_seed(0), p=1.0)
    assert (out >= feats - 1e-4).all()
    assert out[:, :, 25:].mean() > -80 and out[:, :, 25:].max() < -45 + 15 + 15
    assert (out[:, :, :25] - 20.0).abs().max() < 0.1
