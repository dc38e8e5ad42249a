"""Regression tests for the engine review of commit 831c329 (issue 17, defects 1-9), on the tiny models on the CPU.

Each test failed on 831c329. Where the defect only shows on a GPU (host syncs, CUDA generators, TF32), the test
checks the host-side decision that avoids it: which device a table lives on, which generator is reseeded, which
precision a step runs in.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from engine import precision
from engine.inversion import ddim_invert
from engine.models.audioldm import tiny_audioldm
from engine.models.base import Conditioning
from engine.models.tiny_parts import tiny_ddim_config
from engine.stages import finetune, make_sampler, sample, tuned

SHAPE = (8, 16, 16)  # a short latent: these tests check plumbing, not sound


def _z0(model, seconds: float = 0.32):
    t = torch.arange(int(16000 * seconds)) / 16000
    return model.encode_audio((0.4 * torch.sin(2 * torch.pi * 440 * t))[None])


class Recorder:
    """Wraps a model's ``predict_noise`` (an instance attribute shadowing the method) to log each call."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def __enter__(self):
        inner = type(self.model).predict_noise.__get__(self.model)

        def rec(z_t, t, cond):
            self.calls.append((z_t.shape[0], [int(v) for v in t.reshape(-1)]))
            return inner(z_t, t, cond)
        self.model.predict_noise = rec
        return self

    def __exit__(self, *exc):
        del self.model.predict_noise


# 1 ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [25, 50, 200])
def test_dpm_starts_at_the_top_of_the_schedule(steps):
    """Sampling starts from pure noise, so the first timestep must be T − 1. A saved scheduler config says
    "leading" explicitly (the toy's, like AudioLDM's); DPM-Solver++ took it over and started at 951 (25-50 steps)
    or 801 (200)."""
    import json
    from pathlib import Path

    from diffusers import DDIMScheduler

    folder = Path(__file__).resolve().parent.parent / "engine" / "weights" / "toy" / "scheduler"
    config = json.loads((folder / "scheduler_config.json").read_text())
    assert config["timestep_spacing"] == "leading"
    from engine.schedules import DDPMSchedule

    model = SimpleNamespace(schedule=DDPMSchedule(DDIMScheduler.from_config(config)), device=torch.device("cpu"))
    sched = make_sampler(model, "dpm", steps)
    assert int(sched.timesteps[0]) == 999
    assert len(sched.timesteps) == steps
    assert [int(t) for t in make_sampler(model, "ddim", steps).timesteps[:1]] == [1000 - 1000 // steps + 1]


# 2 ---------------------------------------------------------------------------------------------------------------
def test_inversion_for_dpm_ends_where_dpm_starts(tiny_model):
    """The inversion climbs the DPM grid level by level and stops at DPM's first timestep."""
    z0 = _z0(tiny_model)
    e = tiny_model.encode_prompt(["a beep"])
    grid = [int(t) for t in make_sampler(tiny_model, "dpm", 8).timesteps]
    with Recorder(tiny_model) as rec:
        x_T = ddim_invert(tiny_model, z0, e, steps=8, sampler="dpm")
    visited = [ts[0] for _, ts in rec.calls]
    assert visited == [0, *reversed(grid[1:])]  # every level below the top one, from the clean latent up
    assert torch.isfinite(x_T).all()
    ddim = [int(t) for t in make_sampler(tiny_model, "ddim", 8).timesteps]
    with Recorder(tiny_model) as rec:
        ddim_invert(tiny_model, z0, e, steps=8)
    assert [ts[0] for _, ts in rec.calls] == [0, *reversed(ddim[1:])]  # DDIM's grid as before


# 3 ---------------------------------------------------------------------------------------------------------------
def test_full_finetune_leaves_no_gradient_behind():
    m = tiny_audioldm()
    z0 = _z0(m)
    finetune(m, z0, m.encode_prompt(["a beep"]), mode="full", steps=2, lr=1e-4, rank=4, seed=0)
    assert all(p.grad is None for p in m.unet.parameters())


# 4 ---------------------------------------------------------------------------------------------------------------
def test_full_mode_trains_and_samples_in_fp32_with_tf32_on_a_bf16_model():
    m = precision.apply(tiny_audioldm(), "bf16")
    seen: list[tuple] = []

    def probe(module, args):
        seen.append((torch.is_autocast_enabled("cpu"), next(module.parameters()).dtype,
                     torch.backends.cuda.matmul.allow_tf32))
    handle = m.unet.register_forward_pre_hook(probe)
    try:
        z0 = _z0(m)
        e = m.encode_prompt(["a beep"])
        tuning, _ = finetune(m, z0, e, mode="full", steps=2, lr=1e-6, rank=4, seed=0)
        assert seen and all(s == (False, torch.float32, True) for s in seen)  # no bf16 autocast, fp32 + TF32
        assert all(v.dtype == torch.float32 for v in tuning.state.values() if v.is_floating_point())
        seen.clear()
        with tuned(m, tuning):
            sample(m, [e], None, latent_shape=tuple(z0.shape[1:]), steps=2, guidance=1.0, seed=0)
        assert seen and all(s == (False, torch.float32, True) for s in seen)
    finally:
        handle.remove()
    assert next(m.unet.parameters()).dtype == torch.bfloat16  # stored in bf16 again afterwards
    assert not torch.backends.cuda.matmul.allow_tf32


# 5 ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ddim", "dpm"])
def test_sampler_tables_stay_on_the_host_for_a_gpu_model(tiny_model, kind):
    """The loop indexes the scheduler's host tables with host timesteps (no sync per step); only the network gets
    a device copy. On 831c329 the timesteps were put on the model's device (here: a CUDA model on a CPU build)."""
    gpu_model = SimpleNamespace(schedule=tiny_model.schedule, device=torch.device("cuda"))
    sched = make_sampler(gpu_model, kind, 10)
    assert sched.timesteps.device.type == "cpu"


def test_sampling_passes_host_timesteps_to_the_scheduler(tiny_model, monkeypatch):
    from diffusers import DDIMScheduler

    seen = []
    step = DDIMScheduler.step

    def spy(self, model_output, timestep, sample, *a, **k):
        seen.append(timestep.device.type)
        return step(self, model_output, timestep, sample, *a, **k)
    monkeypatch.setattr(DDIMScheduler, "step", spy)
    e = tiny_model.encode_prompt(["a beep"])
    sample(tiny_model, [e], None, latent_shape=SHAPE, steps=3, guidance=1.0, seed=0)
    assert seen == ["cpu"] * 3


# 6 ---------------------------------------------------------------------------------------------------------------
def _zeta_edit(tmp_path, **params):
    from conftest import write_clip

    from engine.editor import Editor
    from engine.params import EditParams, EditRequest

    m = tiny_audioldm(max_seconds=1.0)
    src = tmp_path / "in.wav"
    write_clip(src, seconds=0.5, sr=16000, channels=1)
    p = EditParams(prompt="a bell", etas=(0.5, 1.0), mode="zeta", sample_steps=4, guidance=12.0, **params)
    with Recorder(m) as rec:
        res = Editor(m).edit(EditRequest(str(src), params=p))
    return res, rec.calls


def test_zeta_without_a_source_prompt_inverts_with_one_branch(tmp_path):
    res, seen = _zeta_edit(tmp_path)
    inversion = seen[:4]  # the first 4 calls invert (batch 1: no guidance pair), then sampling guides (2 × takes)
    assert [b for b, _ in inversion] == [1, 1, 1, 1]
    assert all(b % 2 == 0 for b, _ in seen[4:])
    assert res.network_calls == {"inverting": 4, "sampling": 4}


def test_zeta_guides_the_source_with_its_own_scale(tmp_path, monkeypatch):
    import engine.inversion as inv

    used = []
    real = inv.guided_prediction

    def spy(model, x, t, cond, uncond, guidance, **kw):
        used.append(guidance)
        return real(model, x, t, cond, uncond, guidance, **kw)
    monkeypatch.setattr(inv, "guided_prediction", spy)
    _zeta_edit(tmp_path, source_prompt="a beep", source_guidance=3.0)
    assert used[:4] == [3.0] * 4 and set(used[4:]) == {12.0}  # ZETA's reference: source 3, target 12


# 7: tests/test_graphs.py (no recompile of the sampling step for another η count) ------------------------------

# 8 ---------------------------------------------------------------------------------------------------------------
def test_lora_adapters_sample_in_fp32_on_a_bf16_model():
    m = precision.apply(tiny_audioldm(), "bf16")
    z0 = _z0(m)
    e = m.encode_prompt(["a beep"])
    tuning, _ = finetune(m, z0, e, mode="lora", steps=2, lr=1e-3, rank=4, seed=0)
    with tuned(m, tuning):
        adapters = {n: p.dtype for n, p in m.unet.named_parameters() if "lora_" in n}
        assert adapters and set(adapters.values()) == {torch.float32}
        for n, p in m.unet.named_parameters():
            if "lora_" in n:  # the trained values themselves, not a bf16 rounding of them
                key = n.replace(".aiedit", "")
                assert torch.equal(p.detach().cpu(), tuning.state[key]), n
                break
        out = sample(m, [e], None, latent_shape=tuple(z0.shape[1:]), steps=2, guidance=1.0, seed=0)
    assert torch.isfinite(out).all()


# 9 ---------------------------------------------------------------------------------------------------------------
def test_lora_init_reseeds_only_the_cpu_generator(tiny_model, monkeypatch):
    """torch.manual_seed also reseeds every CUDA generator (and fork_rng(devices=[]) does not restore them)."""
    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeded.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: reseeded.append(seed))
    z0 = _z0(tiny_model)
    a, _ = finetune(tiny_model, z0, tiny_model.encode_prompt(["a beep"]), mode="lora", steps=1, lr=1e-3, rank=4,
                    seed=5)
    b, _ = finetune(tiny_model, z0, tiny_model.encode_prompt(["a beep"]), mode="lora", steps=1, lr=1e-3, rank=4,
                    seed=5)
    assert reseeded == []
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)  # still seeded by the edit


def test_sdedit_runs_every_strength_in_one_loop(tiny_model):
    """Strengths .25/.5/.75 at 8 steps: 6 sequential calls (the longest), not 2 + 4 + 6; same takes as alone."""
    z_ref = torch.randn((1, *SHAPE), generator=torch.Generator().manual_seed(1))
    e = tiny_model.encode_prompt(["a beep"])
    u = tiny_model.encode_prompt([""])
    kw = dict(latent_shape=SHAPE, steps=8, guidance=2.0, seed=3, z_ref=z_ref)
    with Recorder(tiny_model) as rec:
        together = sample(tiny_model, [e] * 3, u, strength=[0.25, 0.5, 0.75], **kw)
    assert len(rec.calls) == 6
    alone = torch.cat([sample(tiny_model, [e], u, strength=s, **kw) for s in (0.25, 0.5, 0.75)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_sdedit_editor_counts_one_loop(tmp_path):
    from conftest import write_clip

    from engine.editor import Editor
    from engine.params import EditParams, EditRequest

    src = tmp_path / "in.wav"
    write_clip(src, seconds=0.5, sr=16000, channels=1)
    res = Editor(tiny_audioldm(max_seconds=1.0)).edit(EditRequest(str(src), params=EditParams(
        prompt="a bell", etas=(0.25, 0.5, 0.75), mode="sdedit", sample_steps=8)))
    assert res.network_calls == {"sampling": 6}


def test_guidance_conditioning_is_built_once_per_run(tiny_model, monkeypatch):
    built = []
    cat = Conditioning.cat

    def spy(items):
        built.append(len(items))
        return cat(items)
    monkeypatch.setattr(Conditioning, "cat", staticmethod(spy))
    e = tiny_model.encode_prompt(["a beep"])
    u = tiny_model.encode_prompt([""])
    sample(tiny_model, [e, e], u, latent_shape=SHAPE, steps=6, guidance=3.0, seed=0)
    assert len(built) <= 2  # the takes, and the guidance pair: not one per step


def test_stage_cache_keeps_precisions_apart(tmp_path):
    """A bf16 model's stages 1-2 are not the fp32 model's, though the name, audio and parameters agree."""
    from conftest import write_clip

    from engine.cache import StageCache
    from engine.editor import Editor
    from engine.params import EditParams, EditRequest

    src = tmp_path / "in.wav"
    write_clip(src, seconds=0.5, sr=16000, channels=1)
    req = EditRequest(str(src), params=EditParams(prompt="a bell", etas=(0.5,), embed_steps=1, tune_steps=1,
                                                  sample_steps=2))
    cache = StageCache()
    first = Editor(tiny_audioldm(max_seconds=1.0), cache=cache).edit(req)
    again = Editor(tiny_audioldm(max_seconds=1.0), cache=cache).edit(req)
    other = Editor(precision.apply(tiny_audioldm(max_seconds=1.0), "bf16"), cache=cache).edit(req)
    assert not first.cache_hit and again.cache_hit and not other.cache_hit


def test_tiny_models_use_audioldms_schedule():
    """tiny_ddim_config says it is the AudioLDM family's schedule: 0.0015 → 0.0195 (ᾱ(999) ≈ 1.4e-4), not Stable
    Diffusion's 0.00085 → 0.012 (ᾱ(999) ≈ 4.7e-3, which is the toy model's and TANGO's)."""
    from diffusers import DDIMScheduler

    cfg = tiny_ddim_config()
    assert (cfg["beta_start"], cfg["beta_end"]) == (0.0015, 0.0195)
    a_T = float(DDIMScheduler(**cfg).alphas_cumprod[-1])
    assert a_T == pytest.approx(1.42e-4, rel=0.01)
