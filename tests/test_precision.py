"""The bf16 fast path, checked on the CPU (which computes bf16 too): what is stored in bf16, what trains in fp32,
and that stage 2 still puts the pretrained (bf16) weights back bit for bit."""

from __future__ import annotations

import pytest
import torch

from engine import precision
from engine.errors import InputError
from engine.models.tango import tiny_tango
from engine.stages import diffusion_loss, finetune, optimize_embedding, sample, tuned


def _z0(model):
    t = torch.arange(16000) / 16000
    return model.encode_audio((0.4 * torch.sin(2 * torch.pi * 440 * t) * ((t % 0.25) < 0.08))[None])


def _fixed_loss(model, z0, cond, reps=8):
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        return sum(diffusion_loss(model, z0, cond, gen).item() for _ in range(reps)) / reps


@pytest.fixture(scope="module")
def bf16_model():
    return precision.apply(tiny_tango(), "bf16")


def test_auto_is_fp32_off_cuda_and_unknown_names_are_refused():
    assert precision.resolve("auto", "cpu") == torch.float32
    assert precision.resolve("bf16", "cpu") == torch.bfloat16
    with pytest.raises(InputError, match="precision"):
        precision.resolve("fp16", "cpu")


def test_auto_on_cpu_changes_nothing():
    a, b = tiny_tango(), precision.apply(tiny_tango(), "auto")
    assert all(p.dtype == torch.float32 for m in b.modules().values() for p in m.parameters())
    za, zb = _z0(a), _z0(b)
    assert torch.equal(za, zb)
    e = a.encode_prompt(["rain"])
    ea, la = optimize_embedding(a, za, e, steps=3, lr=1e-2, seed=0)
    eb, lb = optimize_embedding(b, zb, e, steps=3, lr=1e-2, seed=0)
    assert la == lb and torch.equal(ea.tensors["encoder_hidden_states"], eb.tensors["encoder_hidden_states"])


def test_bf16_stores_frozen_weights_once_and_keeps_the_interface_fp32(bf16_model):
    m = bf16_model
    entries = tuple(f"{e}." for e in m.conditioning_entries())
    assert entries, "TANGO's UNet reads the text through cross-attention"
    for name, mod in m.modules().items():
        for pname, p in mod.named_parameters():
            fp32 = name in m.codec_modules or (mod is m.unet and pname.startswith(entries))
            assert p.dtype == (torch.float32 if fp32 else torch.bfloat16), (name, pname, p.dtype)
    z0 = _z0(m)
    e = m.encode_prompt(["a dog barking"])
    assert z0.dtype == torch.float32 and e.tensors["encoder_hidden_states"].dtype == torch.float32
    e_opt, losses = optimize_embedding(m, z0, e, steps=30, lr=5e-2, seed=0)
    assert e_opt.tensors["encoder_hidden_states"].dtype == torch.float32
    assert all(isinstance(v, float) for v in losses) and len(losses) == 30
    assert _fixed_loss(m, z0, e_opt) < _fixed_loss(m, z0, e)
    m.to(m.device)  # moving the model keeps its storage dtype
    assert next(m.unet.parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_bf16_stage2_trains_fp32_and_restores_the_bf16_weights_bit_for_bit(bf16_model, mode):
    m = bf16_model
    z0 = _z0(m)
    e = m.encode_prompt(["a dog barking"])
    before = {k: v.clone() for k, v in m.unet.state_dict().items()}
    tuning, losses = finetune(m, z0, e, mode=mode, steps=8, lr=1e-2 if mode == "lora" else 1e-3, rank=4, seed=0)
    assert all(torch.isfinite(torch.tensor(losses)))
    after = m.unet.state_dict()
    assert set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)
    entries = tuple(f"{e}." for e in m.conditioning_entries())
    assert all(v.dtype == (torch.float32 if k.startswith(entries) else torch.bfloat16)
               for k, v in after.items() if v.is_floating_point())
    if mode == "lora":
        assert all(v.dtype == torch.float32 for v in tuning.state.values())  # adapters train in fp32
    else:
        assert all(v.dtype == torch.float32 for v in tuning.state.values())  # bf16 would round the drift away
        assert any(not torch.equal(tuning.state[k], before[k]) for k in before)
    shape = tuple(z0.shape[1:])
    with tuned(m, tuning):
        out = sample(m, [e], None, latent_shape=shape, steps=3, guidance=1.0, seed=0)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    restored = m.unet.state_dict()
    assert all(torch.equal(before[k], restored[k]) for k in before)


def test_bf16_sampling_stays_close_to_fp32():
    """Same weights (rounded to bf16 for both), so the difference is the bf16 arithmetic alone."""
    ref = tiny_tango()
    for mod in ref.modules().values():
        mod.to(torch.bfloat16).float()
    fast = precision.apply(tiny_tango(), "bf16")
    for (_, a), (_, b) in zip(ref.unet.state_dict().items(), fast.unet.state_dict().items(), strict=True):
        a.copy_(b.float())
    e = ref.encode_prompt(["rain on a roof"])
    u = ref.encode_prompt([""])
    kw = dict(latent_shape=(8, 16, 16), steps=10, guidance=3.0, seed=0)
    x32 = sample(ref, [e], u, **kw)
    x16 = sample(fast, [e.to("cpu", torch.float32)], u, **kw)
    rel = ((x16 - x32).norm() / x32.norm()).item()
    assert rel < 0.05, rel


def test_cpu_keeps_the_cpu_generator_and_plain_adam():
    assert precision.generator(3, "cpu").device.type == "cpu"
    opt = precision.optimizer([torch.zeros(2, requires_grad=True)], 1e-3)
    assert not opt.defaults.get("fused")


def test_cli_runs_an_edit_in_bf16_and_records_it(tmp_path):
    import json

    from conftest import write_clip

    from engine.cli import main

    src = tmp_path / "door.wav"
    write_clip(src, seconds=1.0, sr=16000, channels=1)
    out = tmp_path / "takes"
    code = main([str(src), "--prompt", "a door", "--eta", "0.5", "--precision", "bf16", "--out", str(out),
                 "--cache", "", "--embed-steps", "2", "--tune-steps", "2", "--sample-steps", "2"])
    assert code == 0
    side = json.loads((out / "door_aiedit.json").read_text())
    assert side["precision"] == "bfloat16" and len(side["takes"]) == 1


# -- issue 25: the codec and the conditioning stay fp32 -------------------------------------------------------------

def _families():
    from engine.models.ace_step import tiny_ace_step
    from engine.models.audioldm import tiny_audioldm
    from engine.models.audioldm2 import tiny_audioldm2
    from engine.models.stable_audio3 import tiny_stable_audio3

    return {"tango": tiny_tango, "audioldm": tiny_audioldm, "audioldm2": tiny_audioldm2, "sa3": tiny_stable_audio3,
            "ace": tiny_ace_step}


@pytest.mark.parametrize("choice", ["bf16", "auto"])
@pytest.mark.parametrize("family", ["tango", "sa3", "ace"])
def test_the_codec_stays_fp32_on_a_simulated_cuda_path(monkeypatch, family, choice):
    """``auto`` means bf16 on a CUDA GPU with bf16: decided from torch.cuda, so a CUDA machine is simulated by its
    answers (the weights stay on the CPU). The codec is fp32 after loading and after the model is moved again."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    m = _families()[family]()
    m.device = torch.device("cuda")
    precision.apply(m, choice)
    m.device = torch.device("cpu")
    assert m.weight_dtype == torch.bfloat16 and precision.low_precision(m)
    codec = [n for n in m.codec_modules if n in m.modules()]
    assert codec and all(p.dtype == torch.float32 for n in codec for p in m.modules()[n].parameters())
    assert any(p.dtype == torch.bfloat16 for p in m.unet.parameters())
    m.to("cpu")
    assert all(p.dtype == torch.float32 for n in codec for p in m.modules()[n].parameters())


@pytest.mark.parametrize("family", ["sa3", "tango"])
def test_two_etas_001_apart_reach_the_denoiser_as_different_tensors(family):
    """e(η) = (1 − η)·e_opt + η·e_target with e_opt a small step from e_target (as stage 1 leaves it): η = 0.50 and
    0.51 differ by 1e-4 of the embedding, below bf16's resolution. Rounded to bf16 at the boundary (before issue
    25) they were the same number in over 90 % of the places; now the denoiser and the first layer that reads the
    text get them apart in fp32, different nearly everywhere in the prompt's tokens."""
    m = precision.apply(_families()[family](), "bf16")
    e = m.encode_prompt(["a dog barking"])
    key = "encoder_hidden_states"
    g = torch.Generator().manual_seed(0)
    e_opt = e.detach()
    e_opt.tensors[key] = e.tensors[key] * (1 + 0.01 * torch.randn(e.tensors[key].shape, generator=g))
    a, b = e_opt.lerp(e, 0.50), e_opt.lerp(e, 0.51)
    real = a.masks[key][0].bool() if key in a.masks else torch.ones(a.tensors[key].shape[1], dtype=torch.bool)

    def differ(x: torch.Tensor) -> float:  # share of the prompt's real tokens' numbers that differ between rows
        return (x[0, :len(real)][real] != x[1, :len(real)][real]).float().mean().item()
    old = differ(torch.cat([a.tensors[key], b.tensors[key]]).bfloat16())  # what the old cast made of them
    assert old < 0.1, old  # the same number in most places
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.unet.register_forward_pre_hook(lambda mod, args, kw: seen.__setitem__("boundary", kw[key]),
                                              with_kwargs=True)]
    entry = m.unet.get_submodule(m.conditioning_entries()[0])
    hooks.append(entry.register_forward_pre_hook(lambda mod, args: seen.__setitem__("entry", args[0])))
    shape = (8, 8) if family == "sa3" else (8, 16, 16)
    try:
        sample(m, [a, b], None, latent_shape=shape, steps=1, guidance=1.0, seed=0)
    finally:
        for h in hooks:
            h.remove()
    for where in ("boundary", "entry"):
        x = seen[where]
        assert x.dtype == torch.float32 and differ(x) > 0.9, where


@pytest.mark.parametrize("family", ["audioldm", "audioldm2", "ace"])
def test_every_family_edits_with_fp32_conditioning_entries(family, tmp_path):
    """AudioLDM reads a class embedding, AudioLDM 2 two cross-attention contexts (and self-attention in attn2 where
    it has no context), ACE-Step its packed condition through one projection: each edits in bf16 with its entries
    in fp32."""
    import numpy as np
    import soundfile as sf

    from engine.editor import Editor
    from engine.params import EditParams, EditRequest

    m = precision.apply(_families()[family](), "bf16")
    assert m.conditioning_entries()
    t = np.arange(m.sample_rate) / m.sample_rate
    sf.write(tmp_path / "x.wav", 0.3 * np.sin(2 * np.pi * 330 * t), m.sample_rate)
    for mode in ("lora", "sdedit"):
        res = Editor(m).edit(EditRequest(str(tmp_path / "x.wav"), params=EditParams(
            "rain", mode=mode, etas=(0.6,), embed_steps=2, tune_steps=2, sample_steps=2)))
        assert np.isfinite(res.takes[0].audio).all()
