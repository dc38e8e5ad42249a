"""Every edit mode on a tiny ACE-Step 1.5 model (random weights), through the editor and the CLI: takes keep the
input's rate, channel count and length; repaint keeps the input bit for bit outside its range; ranges and modes a
model cannot take are refused in one line; the musical context reaches the models that take it and is noted as
ignored by the others; the three stages train what they should on ACE-Step's DiT."""

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
from engine.params import EditParams, EditRequest, Inpaint, MusicContext
from engine.stages import finetune, optimize_embedding, sample, tuned

FAST = ["--embed-steps", "2", "--tune-steps", "2", "--sample-steps", "3"]


@pytest.fixture(scope="module")
def ace():
    from engine.models.ace_step import tiny_ace_step

    return tiny_ace_step(seed=0)


@pytest.mark.parametrize("sr,channels", [(44100, 2), (48000, 1)])
@pytest.mark.parametrize("mode,extra", [("repaint", ["--inpaint", "0.5:1.5", "--eta", "1.0", "0.5"]),
                                        ("cover", ["--eta", "0.3", "0.7"]),
                                        ("lora", ["--eta", "0.3", "0.7", *FAST])])
def test_cli_takes_keep_rate_channels_length(tmp_path, capsys, sr, channels, mode, extra):
    src = tmp_path / "in.wav"
    original = write_clip(src, seconds=2.0, sr=sr, channels=channels, subtype="FLOAT")
    out = tmp_path / "takes"
    code = main([str(src), "--prompt", "a jazz trio", "--model", "tiny-ace", "--mode", mode, "--out", str(out),
                 "--cache", "", "--bpm", "96", "--time-signature", "6/8", "--lyrics", "[verse] la la", *extra])
    assert code == 0, capsys.readouterr().err
    side = json.loads((out / "in_aiedit.json").read_text())
    assert side["params"]["mode"] == mode and side["music"]["bpm"] == 96 and side["music"]["time_signature"] == "6/8"
    takes = []
    for t in side["takes"]:
        data, rate = sf.read(t["path"], always_2d=True, dtype="float64")
        assert rate == sr and data.shape == original.shape and np.isfinite(data).all()
        takes.append(data)
    assert not np.array_equal(takes[0], takes[1])  # the two strengths / η give two takes
    if mode == "repaint":
        a, b = round(0.5 * sr), round(1.5 * sr)
        for take in takes:
            assert np.array_equal(take[:a], original[:a]) and np.array_equal(take[b:], original[b:])
            assert np.abs(take[a:b] - original[a:b]).max() > 1e-2  # and inside, something new
    if channels == 2:
        assert not np.allclose(takes[0][:, 0], takes[0][:, 1])  # edited in stereo, not one channel copied


def test_repaint_refuses_ranges_it_cannot_take_in_one_line(tmp_path, capsys, ace):
    src = tmp_path / "in.wav"
    write_clip(src, seconds=1.0, sr=48000)
    with pytest.raises(InputError, match=r"repaints ranges of 0\.08 s to 600 s: the range 0\.500-0\.520 s is "
                                         r"0\.020 s long"):
        Editor(ace).edit(EditRequest(str(src), params=EditParams("x", etas=(1.0,), mode="repaint",
                                                                 inpaint=Inpaint(0.5, 0.52))))
    with pytest.raises(InputError, match="repaint regenerates a time range"):
        EditParams("x", etas=(1.0,), mode="repaint").validate()
    out = tmp_path / "takes"
    code = main([str(src), "--prompt", "x", "--model", "tiny-ace", "--mode", "repaint", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--inpaint" in err[0] and not out.exists()


def test_other_families_refuse_repaint_and_cover_naming_their_modes(tmp_path, tiny_model):
    from engine.models.stable_audio3 import tiny_stable_audio3

    src = tmp_path / "in.wav"
    write_clip(src, seconds=0.5, sr=44100)
    for model, modes in ((tiny_model, "lora, full, sdedit, zeta"), (tiny_stable_audio3(), "lora, full, sdedit, "
                                                                                          "flowedit")):
        for mode in ("repaint", "cover"):
            with pytest.raises(InputError, match=f"cannot run mode '{mode}': it runs {modes}$"):
                Editor(model).edit(EditRequest(str(src), params=EditParams("x", etas=(0.5,), mode=mode,
                                                                           inpaint=Inpaint(0.1, 0.3))))


def test_families_without_musical_context_ignore_it_with_a_note(tmp_path, capsys):
    src = tmp_path / "in.wav"
    write_clip(src, seconds=0.5, sr=16000, channels=1)
    out = tmp_path / "takes"
    code = main([str(src), "--prompt", "a bell", "--model", "tiny", "--mode", "sdedit", "--eta", "0.5",
                 "--sample-steps", "2", "--out", str(out), "--bpm", "120", "--key", "A minor"])
    assert code == 0, capsys.readouterr().err
    side = json.loads((out / "in_aiedit.json").read_text())
    assert side["notes"] == ["bpm ignored: tiny does not take musical context",
                             "key ignored: tiny does not take musical context"]
    assert "note: bpm ignored" in capsys.readouterr().out


def test_lyrics_from_a_file_and_bad_context_refused(tmp_path, capsys):
    src = tmp_path / "in.wav"
    write_clip(src, seconds=0.5, sr=48000)
    lyrics = tmp_path / "song.txt"
    lyrics.write_text("[chorus]\nhey hey\n", encoding="utf-8")
    from engine.cli import build_parser, request_from_args

    req = request_from_args(build_parser().parse_args([str(src), "--prompt", "x", "--lyrics", f"@{lyrics}"]))
    assert req.music.lyrics == "[chorus]\nhey hey\n" and req.music.given() == ("lyrics",)
    for bad, what in ((["--bpm", "400"], "bpm 400.0 must be"), (["--time-signature", "5/3"], "time signature"),
                      (["--time-signature", "0/4"], "time signature"), (["--key", "x" * 33], "key"),
                      (["--lyrics", "@/no/such/file"], "cannot read the lyrics file")):
        out = tmp_path / "no"
        code = main([str(src), "--prompt", "x", "--model", "tiny-ace", "--out", str(out), *bad])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and what in err[0], err
        assert not out.exists()


def test_music_context_validation_follows_the_contract():
    ok = MusicContext(lyrics="x" * 4096, bpm=20, key="F# minor", time_signature="32/32", language="pt-BR").validate()
    assert ok.beats_per_bar() == 32 and ok.to_dict()["bpm"] == 20
    for bad in (dict(lyrics="x" * 4097), dict(bpm=19.9), dict(bpm=float("nan")), dict(bpm=True), dict(key=""),
                dict(time_signature="4"), dict(time_signature="4/5"), dict(time_signature="33/4"),
                dict(time_signature="４/4"), dict(language="x" * 17), dict(language=3)):
        with pytest.raises(InputError):
            MusicContext(**bad).validate()
    assert MusicContext().given() == () and MusicContext().to_dict() == {}


def test_the_context_reaches_the_conditioning_and_the_stage_cache_key(tmp_path, ace):
    from engine.models.base import PromptContext

    plain = ace.encode(["rock"], PromptContext(seconds=2.0)).tensors["encoder_hidden_states"]
    tempo = ace.encode(["rock"], PromptContext(seconds=2.0, music=MusicContext(bpm=140)))
    assert tempo.tensors["encoder_hidden_states"].shape != plain.shape or \
        not torch.equal(tempo.tensors["encoder_hidden_states"], plain)
    editor = Editor(ace)
    p = EditParams("rock", etas=(0.5,)).resolved()
    seg = np.zeros(1920 * 4)
    assert editor.stage_cache_key(seg, p, 0) == editor.stage_cache_key(seg, p, 0, MusicContext())
    assert editor.stage_cache_key(seg, p, 0) != editor.stage_cache_key(seg, p, 0, MusicContext(bpm=140))


def test_guidance_is_not_run_on_the_distilled_turbo_checkpoint(tmp_path, ace):
    src = tmp_path / "in.wav"
    write_clip(src, seconds=0.5, sr=48000)
    res = Editor(ace).edit(EditRequest(str(src), params=EditParams("x", etas=(0.5,), mode="sdedit", guidance=4.0,
                                                                   sample_steps=2)))
    assert res.params["guidance"] == 1.0 and res.network_calls == {"sampling": 2}
    assert res.notes == ["guidance 4 ignored: tiny-ace is guidance-distilled and samples without it"]


@pytest.mark.parametrize("mode", ["sdedit", "flowedit", "lora"])
def test_inpainting_with_other_modes_keeps_the_input_outside(tmp_path, ace, mode):
    src = tmp_path / "in.wav"
    original = write_clip(src, seconds=1.0, sr=44100, subtype="FLOAT")
    p = EditParams("x", etas=(0.8,), mode=mode, inpaint=Inpaint(0.3, 0.7), embed_steps=2, tune_steps=2,
                   sample_steps=3, source_prompt="a tone" if mode == "flowedit" else "")
    take = Editor(ace).edit(EditRequest(str(src), params=p)).takes[0].audio.astype(np.float64)
    a, b = round(0.3 * 44100), round(0.7 * 44100)
    assert np.array_equal(take[:a], original[:a]) and np.array_equal(take[b:], original[b:])
    assert np.abs(take[a:b] - original[a:b]).max() > 1e-3


def test_three_stages_on_ace_step(ace):
    torch.manual_seed(0)
    t = torch.arange(1920 * 40) / 48000
    wave = 0.3 * torch.stack([torch.sin(2 * torch.pi * 330 * t), torch.sin(2 * torch.pi * 440 * t)])[None]
    z0 = ace.audio_to_latent(wave)
    e_target, uncond = ace.encode(["a jazz trio", ""]).split([1, 1])
    e_opt, losses1 = optimize_embedding(ace, z0, e_target, steps=30, lr=5e-2, seed=0)
    assert np.mean(losses1[-5:]) < np.mean(losses1[:5])  # stage 1 fits the conditioning to the clip
    assert not torch.equal(e_opt.tensors["encoder_hidden_states"], e_target.tensors["encoder_hidden_states"])
    before = {k: v.clone() for k, v in ace.unet.state_dict().items()}
    tuning, losses2 = finetune(ace, z0, e_opt, mode="lora", steps=30, lr=1e-2, rank=4, seed=0, draws=2)
    assert np.mean(losses2[-5:]) < np.mean(losses2[:5])
    assert tuning.state and all("lora_" in k for k in tuning.state)
    assert all(torch.equal(v, ace.unet.state_dict()[k]) for k, v in before.items())  # the DiT is left as it was
    full, _ = finetune(ace, z0, e_opt, mode="full", steps=2, lr=1e-4, rank=4, seed=0)
    assert all(torch.equal(v, ace.unet.state_dict()[k]) for k, v in before.items())
    conds = [e_opt.lerp(e_target, eta) for eta in (0.0, 1.0)]
    shape = tuple(z0.shape[1:])
    with tuned(ace, tuning):
        out = sample(ace, conds, uncond, latent_shape=shape, steps=4, guidance=1.0, seed=1)
    assert (out[0] - out[1]).abs().max() > 1e-2  # η = 0 and η = 1 differ
    with tuned(ace, full):
        alone = sample(ace, conds[1:], uncond, latent_shape=shape, steps=4, guidance=1.0, seed=1)
    assert torch.isfinite(alone).all()
    assert all(torch.equal(v, ace.unet.state_dict()[k]) for k, v in before.items())
