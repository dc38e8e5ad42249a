"""The steps are graph-ready (issue 17): each compiles to one graph without breaks, and the sampling step is not
compiled again for another η count (defect 7). Checked with torch._dynamo on the tiny model on the CPU; on a GPU
``--compile`` uses the same callables with ``mode="reduce-overhead"`` (CUDA graphs)."""

from __future__ import annotations

import pytest
import torch

from engine import graphs
from engine.models.audioldm import tiny_audioldm
from engine.stages import draw_noise, finetune, guidance_batch, loss_at, optimize_embedding, sample, tuned

SHAPE = (8, 16, 16)


class CountingBackend:
    """A dynamo backend that counts the graphs it is handed and runs them as traced."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


@pytest.fixture
def model():
    torch._dynamo.reset()
    yield tiny_audioldm(max_seconds=1.0)
    torch._dynamo.reset()


def _z0(m):
    t = torch.arange(2560) / 16000
    return m.encode_audio((0.4 * torch.sin(2 * torch.pi * 440 * t))[None])


def _breaks(fn, *args) -> tuple[int, int]:
    out = torch._dynamo.explain(fn)(*args)
    return out.graph_count, out.graph_break_count


def test_training_step_is_one_graph_for_both_stages(model):
    z0 = _z0(model)
    e = model.encode_prompt(["a beep"]).trainable()
    gen = torch.Generator().manual_seed(0)
    with torch.enable_grad():
        t, noise = draw_noise(model, z0, gen)
        assert _breaks(lambda z, c, tt, n: loss_at(model, z, c, tt, n), z0, e, t, noise) == (1, 0)  # stage 1
        from peft.tuners.lora import LoraModel

        from engine.stages import ADAPTER, _lora_config
        lora = LoraModel(model.unet, _lora_config(4, model.lora_target_modules()), ADAPTER)
        try:  # stage 2 (LoRA), 4 noise draws in one batch
            z4 = z0.expand(4, *z0.shape[1:])
            t, noise = draw_noise(model, z4, gen)
            assert _breaks(lambda z, c, tt, n: loss_at(model, z, c, tt, n), z4, e.detach().repeat(4), t,
                           noise) == (1, 0)
        finally:
            lora.unload()


def test_sampling_step_is_one_graph(model):
    e = model.encode_prompt(["a beep", "a bell"])
    u = model.encode_prompt([""])
    both = guidance_batch(e, u)
    x2 = torch.randn(4, *SHAPE)
    t2 = torch.full((4,), 500)
    g = torch.tensor(3.0)

    def step(x2, t2, both, g):
        out_u, out_c = model.predict_noise(x2, t2, both).unflatten(0, (2, -1)).unbind(0)
        return out_u + g * (out_c - out_u)
    assert _breaks(step, x2, t2, both, g) == (1, 0)


def test_another_eta_count_does_not_recompile_the_sampling_step(model):
    backend = CountingBackend()
    graphs.enable(model, backend=backend)
    e = model.encode_prompt(["a beep"])
    u = model.encode_prompt([""])
    kw = dict(latent_shape=SHAPE, steps=3, guidance=2.5, seed=0)
    eager = sample(model, [e, e], u, **kw)
    first = backend.graphs
    assert first >= 1
    for n in (3, 5, 1):
        out = sample(model, [e] * n, u, **kw)
        assert out.shape[0] == n and torch.isfinite(out).all()
    assert backend.graphs == first, "the sampling step was compiled again for another batch size"
    assert torch.isfinite(eager).all()


def test_compiled_steps_match_eager_and_a_second_edit_reuses_them(model):
    """Stages 1-2 and a LoRA sampling run through the compiled callables give the eager numbers; a second
    edit (new adapters, other η count) compiles nothing new."""
    z0 = _z0(model)
    e = model.encode_prompt(["a beep"])
    u = model.encode_prompt([""])
    shape = tuple(z0.shape[1:])

    def edit(n_eta: int):
        e_opt, l1 = optimize_embedding(model, z0, e, steps=2, lr=1e-2, seed=0)
        tuning, l2 = finetune(model, z0, e_opt, mode="lora", steps=2, lr=1e-3, rank=4, seed=0, draws=2)
        with tuned(model, tuning):
            out = sample(model, [e_opt.lerp(e, k / 4) for k in range(n_eta)], u, latent_shape=shape, steps=2,
                         guidance=2.5, seed=0)
        return l1 + l2, out

    ref_losses, ref = edit(2)
    backend = CountingBackend()
    graphs.enable(model, backend=backend)
    losses, out = edit(2)
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ref_losses), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    compiled_once = backend.graphs
    edit(3)
    assert backend.graphs == compiled_once, "a second edit compiled a step again"


def test_cuda_settings_are_decided_on_the_host():
    """What --compile and the optimiser do on a GPU, checked without one."""
    from engine import precision

    assert graphs.default_mode("cuda") == "reduce-overhead" and graphs.default_mode("cpu") is None
    assert precision.adam_options("cuda") == {"fused": True, "capturable": True}
    assert precision.adam_options("cpu") == {}


# -- Stable Audio 3 (issue 25): the flow DiT's steps, on the tiny SA3 ----------------------------------------------

@pytest.fixture
def sa3():
    from engine.models.stable_audio3 import tiny_stable_audio3

    torch._dynamo.reset()
    m = tiny_stable_audio3()
    with m.clip_duration(0.36):  # as the editor runs every step: the window's own length as the duration input
        yield m
    torch._dynamo.reset()


def _sa3_z0(m):
    g = torch.Generator().manual_seed(1)
    return m.audio_to_latent(0.3 * torch.randn(1, 2, 16 * m.downsampling, generator=g))


def test_sa3_training_step_is_one_graph_for_both_stages(sa3):
    z0 = _sa3_z0(sa3)
    e = sa3.encode_prompt(["a beep"]).trainable()
    gen = torch.Generator().manual_seed(0)
    with torch.enable_grad():
        t, noise = draw_noise(sa3, z0, gen)
        assert _breaks(lambda z, c, tt, n: loss_at(sa3, z, c, tt, n), z0, e, t, noise) == (1, 0)  # stage 1
        from peft.tuners.lora import LoraModel

        from engine.stages import ADAPTER, _lora_config
        lora = LoraModel(sa3.unet, _lora_config(4, sa3.lora_target_modules()), ADAPTER)
        try:  # stage 2 (LoRA on the DiT's attention projections), 4 noise draws in one batch
            z4 = z0.expand(4, *z0.shape[1:])
            t, noise = draw_noise(sa3, z4, gen)
            assert _breaks(lambda z, c, tt, n: loss_at(sa3, z, c, tt, n), z4, e.detach().repeat(4), t,
                           noise) == (1, 0)
        finally:
            lora.unload()


def test_sa3_sampling_step_is_one_graph(sa3):
    """The flow models' sampling call (guidance off, as the distilled checkpoints run) and the guided one."""
    z0 = _sa3_z0(sa3)
    e = sa3.encode_prompt(["a beep", "a bell", "rain"])
    x = torch.randn(3, *z0.shape[1:])
    assert _breaks(lambda x, t, c: sa3.predict_noise(x, t, c), x, torch.full((3,), 0.7), e) == (1, 0)
    both = guidance_batch(e, sa3.encode_prompt([""]))

    def guided(x2, t2, both, g):
        out_u, out_c = sa3.predict_noise(x2, t2, both).unflatten(0, (2, -1)).unbind(0)
        return out_u + g * (out_c - out_u)
    assert _breaks(guided, torch.cat([x, x]), torch.full((6,), 0.7), both, torch.tensor(3.0)) == (1, 0)


def test_sa3_another_eta_count_does_not_recompile_any_step(sa3):
    """Three-stage sampling, SDEdit and FlowEdit with 1-5 takes (FlowEdit's batch also grows inside a run as takes
    join): once compiled, no further graph."""
    from engine.flowedit import flowedit

    backend = CountingBackend()
    graphs.enable(sa3, backend=backend)
    z0 = _sa3_z0(sa3)
    e, u = sa3.encode_prompt(["a beep", ""]).split([1, 1])
    shape = tuple(z0.shape[1:])
    sample(sa3, [e, e], None, latent_shape=shape, steps=3, guidance=1.0, seed=0)
    flowedit(sa3, z0, u, e, None, strengths=[0.5, 0.9], steps=6, guidance=1.0, seed=0)
    first = backend.graphs
    assert first >= 1
    for n in (3, 5, 1):
        out = sample(sa3, [e] * n, None, latent_shape=shape, steps=3, guidance=1.0, seed=0, z_ref=z0,
                     strength=[0.6] * n)
        fe = flowedit(sa3, z0, u, e, None, strengths=[0.3 + 0.6 * k / max(1, n - 1) for k in range(n)], steps=6,
                      guidance=1.0, seed=0)
        assert out.shape[0] == fe.shape[0] == n and torch.isfinite(out).all() and torch.isfinite(fe).all()
    assert backend.graphs == first, "a flow step was compiled again for another batch size"


def test_sa3_compiled_steps_match_eager(sa3):
    """Stage 1, LoRA stage 2 (2 draws), sampling with the tuning and FlowEdit, through the compiled callables: the
    eager numbers; a second edit with another η count compiles nothing new."""
    from engine.flowedit import flowedit

    z0 = _sa3_z0(sa3)
    e, u = sa3.encode_prompt(["a beep", ""]).split([1, 1])
    shape = tuple(z0.shape[1:])

    def edit(n_eta: int):
        e_opt, l1 = optimize_embedding(sa3, z0, e, steps=2, lr=1e-2, seed=0)
        tuning, l2 = finetune(sa3, z0, e_opt, mode="lora", steps=2, lr=1e-3, rank=4, seed=0, draws=2)
        with tuned(sa3, tuning):
            out = sample(sa3, [e_opt.lerp(e, k / 4) for k in range(n_eta)], None, latent_shape=shape, steps=3,
                         guidance=1.0, seed=0)
        fe = flowedit(sa3, z0, u, e, None, strengths=[0.5, 0.9][:n_eta], steps=6, guidance=1.0, seed=0)
        return l1 + l2, out, fe

    ref_losses, ref, ref_fe = edit(2)
    backend = CountingBackend()
    graphs.enable(sa3, backend=backend)
    losses, out, fe = edit(2)
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ref_losses), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fe, ref_fe, rtol=1e-4, atol=1e-5)
    compiled_once = backend.graphs
    edit(3)
    assert backend.graphs == compiled_once, "a second edit compiled a step again"
