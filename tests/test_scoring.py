"""CLAP scoring with the tiny offline scorer: the real feature-extractor path, random tiny weights."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from engine.errors import InputError, ModelUnavailable
from engine.result import Scores
from engine.scoring import ClapScorer

SR = 48_000


def tone(freq: float, seconds: float = 10.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float = 10.0, sr: int = SR, seed: int = 1) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


@pytest.fixture(scope="module")
def scorer() -> ClapScorer:
    return ClapScorer.tiny(seed=0)


def test_tiny_builds_offline_with_real_unfused_front_end(scorer: ClapScorer) -> None:
    fe = scorer.feature_extractor
    assert (fe.sampling_rate, fe.feature_size, fe.hop_length, fe.nb_max_samples) == (48_000, 64, 480, 480_000)
    assert (fe.truncation, fe.padding) == ("rand_trunc", "repeatpad")
    assert not scorer.model.config.audio_config.enable_fusion
    assert not scorer.model.training


def test_tiny_is_deterministic_for_a_seed() -> None:
    a, b, c = ClapScorer.tiny(seed=3), ClapScorer.tiny(seed=3), ClapScorer.tiny(seed=4)
    texts = ["a dog barking"]
    assert torch.equal(a.embed_text(texts), b.embed_text(texts))
    assert not torch.equal(a.embed_text(texts), c.embed_text(texts))


def test_embeddings_are_unit_norm(scorer: ClapScorer) -> None:
    text = scorer.embed_text(["rain on a tin roof", "a violin", ""])
    audio = scorer.embed_audio([tone(440), noise(), tone(220, seconds=2.5)], SR)
    assert text.shape[0] == 3 and audio.shape[0] == 3 and text.shape[1] == audio.shape[1]
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(audio.norm(dim=-1), torch.ones(3))


def test_scores_one_per_take_in_order_and_discriminate(scorer: ClapScorer) -> None:
    ref = tone(440)
    takes = [noise(), ref.copy(), tone(3000)]
    scores = scorer.score(takes, SR, ref, "a sine tone")
    assert len(scores) == 3 and all(isinstance(s, Scores) for s in scores)
    for s in scores:
        assert np.isfinite([s.text, s.audio]).all()
        assert -1.0 <= s.text <= 1.0 and -1.0 <= s.audio <= 1.0
        assert s.sum == pytest.approx(s.text + s.audio)
    assert scores[1].audio == pytest.approx(1.0, abs=1e-5)  # identical audio
    assert scores[0].audio < scores[1].audio - 1e-3  # noise is not the tone
    assert scores[2].audio < scores[1].audio - 1e-3
    # Text CLAP is the same computation per take, so reordering the takes reorders the scores.
    again = scorer.score(takes[::-1], SR, ref, "a sine tone")
    assert [s.text for s in again] == pytest.approx([s.text for s in scores[::-1]], abs=1e-6)


def test_text_score_depends_on_the_prompt(scorer: ClapScorer) -> None:
    a = scorer.score([noise()], SR, tone(440), "a dog barking")[0]
    b = scorer.score([noise()], SR, tone(440), "heavy rain")[0]
    assert a.audio == pytest.approx(b.audio, abs=1e-6)
    assert a.text != pytest.approx(b.text, abs=1e-6)


def test_resamples_44k1_stereo(scorer: ClapScorer) -> None:
    sr = 44_100
    mono = tone(440, seconds=3.0, sr=sr)
    stereo = np.stack([mono, mono], axis=1)
    s = scorer.score([stereo], sr, mono, "a tone")[0]
    assert s.audio == pytest.approx(1.0, abs=1e-5)  # mixing identical channels to mono changes nothing
    at_48k = scorer.embed_audio([tone(440, seconds=3.0)], SR)
    at_44k1 = scorer.embed_audio([mono], sr)
    assert float(at_48k[0] @ at_44k1[0]) > 0.999  # same tone, resampled properly


def test_deterministic_across_calls_including_long_clips(scorer: ClapScorer) -> None:
    long_ref = np.concatenate([tone(440, seconds=6.0), noise(seconds=7.0)])  # 13 s > 10 s window: cropped
    take = long_ref[::-1].copy()
    state = np.random.get_state()
    first = scorer.score([take, long_ref], SR, long_ref, "a tone then noise")
    second = scorer.score([take, long_ref], SR, long_ref, "a tone then noise")
    assert first == second
    assert first[1].audio == pytest.approx(1.0, abs=1e-5)  # same length → same crop for take and reference
    assert np.array_equal(np.random.get_state()[1], state[1])  # caller's global RNG untouched


def test_fusion_truncation_is_deterministic_and_restores_numpy_rng() -> None:
    from transformers import ClapFeatureExtractor

    base = ClapScorer.tiny()
    fused_fe = ClapFeatureExtractor(truncation="fusion")
    fused = ClapScorer.from_components(base.model, base.tokenizer, fused_fe, "cpu")
    clip = noise(seconds=12.0)
    np.random.seed(123)
    a = fused._features(clip)
    b = fused._features(clip)
    after = np.random.rand()
    np.random.seed(123)
    assert after == np.random.rand()  # the extractor's random crops did not consume the caller's stream
    assert a["input_features"].shape == (1, 4, 1001, 64)
    assert torch.equal(a["input_features"], b["input_features"])
    assert torch.equal(a["is_longer"], b["is_longer"])


def test_from_components_keeps_the_owner_model_mode() -> None:
    base = ClapScorer.tiny()
    base.model.train()
    shared = ClapScorer.from_components(base.model, base.tokenizer, base.feature_extractor, "cpu")
    assert shared.model is base.model
    e1 = shared.embed_audio([tone(440, seconds=1.0)], SR)
    e2 = shared.embed_audio([tone(440, seconds=1.0)], SR)
    assert torch.equal(e1, e2)  # dropout was off during scoring
    assert base.model.training  # and the owner's mode came back


def test_bad_audio_is_an_input_error(scorer: ClapScorer) -> None:
    with pytest.raises(InputError):
        scorer.embed_audio([np.zeros(0, dtype=np.float32)], SR)
    with pytest.raises(InputError):
        scorer.embed_audio([np.zeros((2, 3, 4), dtype=np.float32)], SR)
    assert scorer.score([], SR, tone(440), "x") == []


@pytest.mark.parametrize("where", ["missing_folder", "empty_folder", "hub_id"])
def test_missing_model_raises_model_unavailable_quickly(where: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    target = {"missing_folder": str(tmp_path / "nope"), "empty_folder": str(tmp_path),
              "hub_id": "laion/clap-htsat-unfused"}[where]
    start = time.perf_counter()
    with pytest.raises(ModelUnavailable) as info:
        ClapScorer.load(target, cache_dir=str(tmp_path / "empty_cache"))
    assert time.perf_counter() - start < 5.0
    message = str(info.value)
    assert "\n" not in message and "clap" in message.lower()
