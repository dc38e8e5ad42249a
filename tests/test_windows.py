"""Issue 25, item 4: one pass per model window. A family edits a clip in one window up to its real maximum (SA3
small 120 s, medium 380 s; the AudioLDM family its 10.24 s), and cuts windows only beyond it; the GPU benchmark
builds SA3 with the product's window; SA3's codec runs in chunks so one long window does not cost quadratic
memory; each window's duration conditioning is its own length."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from engine.models.stable_audio3 import _in_chunks, codec_reach, sa3_max_seconds, tiny_stable_audio3


def _stereo(path, seconds: float, sr: int = 44100) -> str:
    t = np.arange(int(seconds * sr)) / sr
    gate = (t % 0.5) < 0.1
    sf.write(path, np.stack([0.3 * np.sin(2 * np.pi * 330 * t) * gate, 0.2 * np.sin(2 * np.pi * 495 * t)], 1)
             .astype(np.float32), sr)
    return str(path)


def test_a_100_s_stereo_item_on_tiny_sa3_is_edited_in_one_window(tmp_path, caplog):
    from engine.cli import main

    src = _stereo(tmp_path / "long.wav", 100.0)
    out = tmp_path / "takes"
    with caplog.at_level("INFO", logger="aiedit.engine"):
        code = main([src, "--prompt", "a bell", "--model", "tiny-sa3", "--mode", "sdedit", "--eta", "0.6",
                     "--sample-steps", "2", "--out", str(out), "--cache", ""])
    assert code == 0
    side = json.loads((out / "long_aiedit.json").read_text())
    assert side["windows"] == 1 and side["window_seconds"] == 120.0
    assert side["network_calls"]["sampling"] == 2  # one pass: one window's calls, not four windows' of 30 s
    assert "100.0 s edited in 1 window " in caplog.text
    take, sr = sf.read(side["takes"][0]["path"])
    assert take.shape == (100 * 44100, 2) and sr == 44100


def test_beyond_the_models_window_the_item_is_cut_into_windows():
    from engine.editor import Editor
    from engine.params import EditParams, EditRequest

    ed = Editor(tiny_stable_audio3(max_seconds=2.0))
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        res = ed.edit(EditRequest(_stereo(Path(tmp) / "c.wav", 3.5), params=EditParams(
            "a bell", mode="sdedit", etas=(0.6,), sample_steps=2)))
    assert res.windows == 2 and res.takes[0].audio.shape == (int(3.5 * 44100), 2)


def test_real_sizes_take_their_published_maximum_and_the_gpu_benchmark_agrees():
    from benchmarks.gpu import build_sa3

    for family, seconds in (("sa3-small", 120.0), ("sa3-medium", 380.0)):
        m = build_sa3(family, "meta")  # the benchmark's own build, on the meta device (no memory)
        assert m.max_seconds == seconds == sa3_max_seconds(m.unet.config, m.duration_embedder.config)
    assert tiny_stable_audio3().max_seconds == 120.0  # the tiny model stands in for small
    from engine.models.audioldm import tiny_audioldm
    from engine.models.tango import tiny_tango

    assert tiny_tango().max_seconds == tiny_audioldm().max_seconds == 10.24  # their trained window, unchanged


def test_the_codec_in_chunks_gives_the_whole_clips_latents_and_audio():
    """SA3's codec attends a few latent frames either side (codec_reach); chunks with that margin equal one call on
    the whole clip, and a margin too small does not (so the comparison can fail)."""
    m = tiny_stable_audio3()
    vae, ds, frames = m.vae, m.downsampling, 90
    wave = 0.3 * torch.randn(1, 2, frames * ds, generator=torch.Generator().manual_seed(0))
    reach = codec_reach(vae)
    with torch.no_grad():
        whole = vae.encode(wave).latents
        chunked = _in_chunks(lambda a, b: vae.encode(wave[..., a * ds:b * ds]).latents, frames, reach, chunk=16)
        blind = _in_chunks(lambda a, b: vae.encode(wave[..., a * ds:b * ds]).latents, frames, 0, chunk=16)
        torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)
        assert (blind - whole).abs().max() > 1e-2
        audio = vae.decode(whole).sample
        torch.testing.assert_close(_in_chunks(lambda a, b: vae.decode(whole[..., a:b]).sample, frames, reach,
                                              chunk=16, scale=ds), audio, rtol=0, atol=1e-5)
    torch.testing.assert_close(m.latent_to_audio(m.audio_to_latent(wave)), audio.clamp(-1, 1), rtol=0, atol=1e-5)


@pytest.mark.parametrize("seconds", [0.5, 1.3])
def test_each_window_is_conditioned_on_its_own_length(tmp_path, seconds):
    """The DiT hears the clip's duration (as the SA3 pipelines pass the requested one), not the padded latent's."""
    from engine.editor import Editor
    from engine.params import EditParams, EditRequest

    m = tiny_stable_audio3()
    heard: list[float] = []
    handle = m.duration_embedder.register_forward_pre_hook(lambda mod, args: heard.extend(args[0].tolist()))
    try:
        Editor(m).edit(EditRequest(_stereo(tmp_path / "c.wav", seconds), params=EditParams(
            "a bell", mode="sdedit", etas=(0.6,), sample_steps=2)))
    finally:
        handle.remove()
    assert heard and all(abs(h - seconds) < 1e-5 for h in heard), (seconds, set(heard))
    assert m.seconds_of(m.frames_for(int(seconds * 44100))) != pytest.approx(seconds)


def test_five_one_downmixes_centre_to_both_sides_and_leaves_the_lfe_out():
    """Issue 25: 5.1 (L R C LFE Ls Rs) folded even→left, odd→right put the centre left only and the LFE right only."""
    from engine.channels import to_input_channels, to_model_channels

    n = 100
    for k, (left, right) in enumerate([(1, 0), (0, 1), (1, 1), (0, 0), (1, 0), (0, 1)]):
        x = np.zeros((n, 6))
        x[:, k] = 0.5
        st = to_model_channels(x, 2)
        assert (st[:, 0] > 0).all() == bool(left) and (st[:, 1] > 0).all() == bool(right), k
        if left and right:
            np.testing.assert_allclose(st[:, 0], st[:, 1])  # the centre sits in the middle
    loud = to_model_channels(np.ones((n, 6)), 2)
    assert loud.max() <= 1.0 + 1e-12  # the matrix cannot clip
    np.testing.assert_array_equal(to_model_channels(np.ones((n, 2)) * [0.3, 0.1], 2), np.ones((n, 2)) * [0.3, 0.1])
    y = np.stack([np.full(n, 0.2), np.full(n, -0.4)], axis=1)
    back = to_input_channels(y, 6)
    np.testing.assert_allclose(back[0], [0.2, -0.4, -0.1, -0.1, 0.2, -0.4])  # sides by role, centre and LFE the mid
