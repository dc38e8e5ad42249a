"""Every edit mode on a tiny Stable Audio 3 model (random weights), through the editor and the CLI: takes keep the
input's rate, channel count and length; stereo is really edited in stereo; modes a family cannot run are refused in
one line; the stages train what they should on the DiT with the flow-matching loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import write_clip

from engine.cli import main
from engine.editor import Editor
from engine.errors import InputError
from engine.flowedit import flowedit
from engine.params import EditParams, EditRequest, Inpaint
from engine.stages import diffusion_loss, finetune, optimize_embedding

FAST = ["--embed-steps", "2", "--tune-steps", "2", "--sample-steps", "3"]


@pytest.fixture(scope="module")
def sa3():
    from engine.models.stable_audio3 import tiny_stable_audio3

    return tiny_stable_audio3(seed=0)


@pytest.mark.parametrize("mode", ["flowedit", "lora"])
def test_cli_edit_on_tiny_sa3_keeps_rate_channels_length(tmp_path, capsys, mode):
    src = tmp_path / "in.wav"
    original = write_clip(src, seconds=1.2, sr=44100, channels=2)
    out = tmp_path / "takes"
    code = main([str(src), "--prompt", "a church bell", "--model", "tiny-sa3", "--mode", mode, "--eta", "0.6", "1.0",
                 "--out", str(out), "--cache", str(tmp_path / "cache"), *FAST])
    assert code == 0, capsys.readouterr().err
    side = json.loads((out / "in_aiedit.json").read_text())
    assert side["params"]["mode"] == mode and [t["eta"] for t in side["takes"]] == [0.6, 1.0]
    takes = []
    for t in side["takes"]:
        data, sr = sf.read(t["path"], always_2d=True)
        assert sr == 44100 and data.shape == original.shape and np.isfinite(data).all()
        takes.append(data)
    assert not np.allclose(takes[0][:, 0], takes[0][:, 1])  # two real channels, not mono copied twice
    assert not np.allclose(takes[0], takes[1])  # the strengths / η differ
    assert all(set(t["scores"]) == {"text", "audio", "sum"} for t in side["takes"])
    if mode == "flowedit":  # both strengths in one loop: one network call per step of the earliest start
        assert side["network_calls"] == {"sampling": 3}


def test_a_retake_reuses_stages_1_2_from_the_cache(tmp_path, sa3):
    src = tmp_path / "in.wav"
    write_clip(src, seconds=0.6, sr=44100)
    editor = Editor(sa3)
    p = EditParams("a bell", etas=(0.5,), mode="lora", embed_steps=2, tune_steps=2, sample_steps=2)
    first = editor.edit(EditRequest(str(src), params=p))
    again = editor.edit(EditRequest(str(src), params=p.with_(etas=(0.25, 1.0))))
    assert not first.cache_hit and again.cache_hit
    assert "finetune" not in again.timings and len(again.takes) == 2


def test_modes_the_family_cannot_run_are_refused_in_one_line(tmp_path, capsys, sa3, tiny_model):
    src = tmp_path / "in.wav"
    write_clip(src, seconds=0.5, sr=44100)
    with pytest.raises(InputError, match=r"cannot run mode 'zeta': it runs lora, full, sdedit, flowedit"):
        Editor(sa3).edit(EditRequest(str(src), params=EditParams("x", etas=(0.5,), mode="zeta")))
    with pytest.raises(InputError, match=r"cannot run mode 'flowedit': it runs lora, full, sdedit, zeta"):
        Editor(tiny_model).edit(EditRequest(str(src), params=EditParams("x", etas=(0.5,), mode="flowedit")))
    with pytest.raises(InputError, match="no DDIM inversion"):
        Editor(sa3).edit(EditRequest(str(src), params=EditParams("x", etas=(0.5,), start="inversion")))
    out = tmp_path / "takes"
    code = main([str(src), "--prompt", "x", "--model", "tiny-sa3", "--mode", "zeta", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "flowedit" in err[0] and not out.exists()


@pytest.mark.parametrize("mode", ["sdedit", "flowedit", "full"])
def test_inpainting_keeps_the_input_exact_outside_the_range(tmp_path, sa3, mode):
    src = tmp_path / "in.wav"
    original = write_clip(src, seconds=1.0, sr=48000, channels=2)  # another rate: resampled both ways
    p = EditParams("rain", etas=(0.7,), mode=mode, inpaint=Inpaint(0.3, 0.6), embed_steps=1, tune_steps=1,
                   sample_steps=3)
    result = Editor(sa3).edit(EditRequest(str(src), params=p))
    audio = result.takes[0].audio
    assert result.sample_rate == 48000 and audio.shape == original.shape
    a, b = int(0.3 * 48000), int(0.6 * 48000)
    assert np.array_equal(audio[:a], original[:a].astype(np.float32))
    assert np.array_equal(audio[b:], original[b:].astype(np.float32))
    assert not np.allclose(audio[a + 500:b - 500], original[a + 500:b - 500], atol=1e-3)


def test_mono_input_comes_back_mono_from_a_stereo_model(tmp_path, sa3):
    src = tmp_path / "mono.wav"
    original = write_clip(src, seconds=0.7, sr=22050, channels=1)
    result = Editor(sa3).edit(EditRequest(str(src), params=EditParams("wind", etas=(0.5,), mode="sdedit",
                                                                     sample_steps=2)))
    assert result.takes[0].audio.shape == original.shape and result.sample_rate == 22050


def test_flow_loss_and_stages_train_the_dit(sa3):
    z0 = sa3.audio_to_latent(torch.randn(1, 2, 16 * 1024) * 0.2)
    e = sa3.encode_prompt(["a bell"])
    gen = torch.Generator().manual_seed(0)
    t, noise = sa3.schedule.draw(z0, gen)
    z_t, target = sa3.schedule.training_pair(z0, t, noise)
    assert z_t.shape == target.shape == z0.shape and ((t >= 0) & (t <= 1)).all()
    assert torch.isfinite(diffusion_loss(sa3, z0, e, torch.Generator().manual_seed(0)))
    e_opt, losses = optimize_embedding(sa3, z0, e, steps=4, lr=5e-2, seed=0)
    assert len(losses) == 4 and not torch.equal(e_opt.tensors["encoder_hidden_states"],
                                                e.tensors["encoder_hidden_states"])
    before = {k: v.clone() for k, v in sa3.unet.state_dict().items()}
    tuning, _ = finetune(sa3, z0, e_opt, mode="lora", steps=2, lr=1e-2, rank=2, seed=0)
    names = set(tuning.state)
    assert any("self_attn.to_qkv" in k for k in names) and any("cross_attn.to_kv" in k for k in names)
    assert all(torch.equal(v, sa3.unet.state_dict()[k]) for k, v in before.items())  # the DiT is put back


def test_flowedit_at_zero_velocity_difference_returns_the_input(sa3):
    """Same source and target prompt → V_tar = V_src on the same points → the ODE does not move (Kulikov et al.)."""
    z0 = sa3.audio_to_latent(torch.randn(1, 2, 12 * 1024) * 0.2)
    e = sa3.encode_prompt(["a bell"])
    same = flowedit(sa3, z0, e, e, None, strengths=[1.0, 0.5], steps=4, guidance=1.0, seed=0)
    assert torch.allclose(same, z0.expand_as(same), atol=1e-5)
    other = flowedit(sa3, z0, e, sa3.encode_prompt(["rain"]), None, strengths=[1.0, 0.5], steps=4, guidance=1.0,
                     seed=0)
    moved = (other - z0).abs().mean(dim=(1, 2))
    assert moved[0] > moved[1] > 0  # a larger strength starts earlier and moves further
    grid = sa3.schedule.grid(8)  # strength = start σ: the first step at or below it
    assert [sa3.schedule.start_step(s, grid) for s in (1.0, 0.5, 0.01)] == [0, 7, 7]
    assert sa3.schedule.start_step(0.8, grid) == next(i for i, s in enumerate(grid) if s <= 0.8)
