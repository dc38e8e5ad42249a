"""Regression tests for the flow-model engine review (/work/notes/review-engine.md, findings 1-4, 6-8), on the
tiny Stable Audio 3 model on the CPU. Each failed before its fix."""

from __future__ import annotations

import json
import os

import pytest
import torch

from engine import precision
from engine.models.stable_audio3 import tiny_stable_audio3
from engine.stages import finetune, sample, tuned

FRAMES = 8
SHAPE = (8, FRAMES)  # the tiny DiT's io channels × latent frames


@pytest.fixture(scope="module")
def sa3():
    return tiny_stable_audio3(seed=0)


def _z0(m, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return m.audio_to_latent(0.3 * torch.randn(1, 2, FRAMES * m.downsampling, generator=g))


# 1 + 2 -----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sa3_bf16():
    return precision.apply(tiny_stable_audio3(seed=0), "bf16")


def test_bf16_inpainting_runs_and_stays_close_to_fp32(sa3, sa3_bf16):
    """The inpainting input (local_add_cond) is cast at the DiT's boundary like the text context."""
    z0 = _z0(sa3)
    keep = torch.ones(1, 1, FRAMES)
    keep[..., 2:5] = 0
    kw = dict(latent_shape=SHAPE, steps=3, guidance=1.0, seed=2, z_ref=z0, keep=keep)
    low = sample(sa3_bf16, [sa3_bf16.encode_prompt(["rain"])], None, **kw)
    ref = sample(sa3, [sa3.encode_prompt(["rain"])], None, **kw)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert (low - ref).abs().max() < 0.2 * ref.abs().max()  # bf16 rounding, not another result


def test_bf16_full_finetune_trains_and_samples(sa3_bf16):
    """Full mode trains the DiT in fp32 while the duration embedder stays bf16: its output (the global input) is
    cast to the DiT's current weight dtype, in training and in sampling with the tuning."""
    m = sa3_bf16
    z0 = _z0(m)
    e = m.encode_prompt(["rain"])
    tuning, losses = finetune(m, z0, e, mode="full", steps=2, lr=1e-4, rank=4, seed=0)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    with tuned(m, tuning):
        out = sample(m, [e], None, latent_shape=SHAPE, steps=2, guidance=1.0, seed=1)
    assert torch.isfinite(out).all()
    assert precision.weight_dtype(m.unet) == torch.bfloat16  # stored in bf16 again afterwards


# 3 ---------------------------------------------------------------------------------------------------------------
def _folder_with_scheduler(m, tmp_path, cfg: dict):
    from engine.models.stable_audio3 import save_stable_audio3

    folder = save_stable_audio3(m, tmp_path / "sa3")
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize(("cls", "stochastic"), [("PingPongScheduler", True), ("StableAudio3EulerScheduler", False)])
def test_a_converted_scheduler_config_is_normalised_at_load(sa3, tmp_path, cls, stochastic):
    """The newer conversion script writes these classes without num_train_timesteps / stochastic_sampling:
    diffusers would fill in 1000 (t ∈ [0, 1000]) and Euler. Loaded, the DiT sees σ ∈ [0, 1] and the class's sampler."""
    from engine.models.stable_audio3 import load_stable_audio3

    folder = _folder_with_scheduler(sa3, tmp_path, {"_class_name": cls, "_diffusers_version": "0.43.0.dev0"})
    m = load_stable_audio3(folder)
    assert m.schedule.stochastic is stochastic and m.default_steps == (8 if stochastic else 100)
    sched = m.schedule.sampler("", 8)
    assert float(sched.timesteps.max()) <= 1.0 and torch.equal(sched.timesteps, sched.sigmas[:-1])
    if stochastic:  # the same model as the tiny one it was saved from: the same takes
        e = sa3.encode_prompt(["rain"])
        kw = dict(latent_shape=SHAPE, steps=3, guidance=1.0, seed=4)
        torch.testing.assert_close(sample(m, [m.encode_prompt(["rain"])], None, **kw), sample(sa3, [e], None, **kw),
                                   rtol=0, atol=1e-5)


def test_an_unknown_scheduler_class_is_refused_in_one_line(sa3, tmp_path):
    from engine.errors import ModelUnavailable
    from engine.models.stable_audio3 import load_stable_audio3

    folder = _folder_with_scheduler(sa3, tmp_path, {"_class_name": "DPMSolverMultistepScheduler"})
    with pytest.raises(ModelUnavailable, match="unknown Stable Audio 3 scheduler 'DPMSolverMultistepScheduler'") as e:
        load_stable_audio3(folder)
    assert "\n" not in str(e.value)


class TimeLog:
    """Logs the network's time inputs (``predict_noise`` shadowed on the instance)."""

    def __init__(self, model):
        self.model, self.times = model, []

    def __enter__(self):
        inner = type(self.model).predict_noise.__get__(self.model)

        def rec(z_t, t, cond):
            self.times.append(round(float(t.reshape(-1)[0]), 6))
            return inner(z_t, t, cond)
        self.model.predict_noise = rec
        return self

    def __exit__(self, *exc):
        del self.model.predict_noise


def test_flowedit_runs_on_the_samplers_grid_with_shift(sa3, tmp_path):
    """A folder with shift 3 (and num_train_timesteps 1000): FlowEdit evaluates the network exactly at the σ the
    sampler steps on (shifted), not on the unshifted log-SNR grid."""
    from engine.flowedit import flowedit
    from engine.models.stable_audio3 import load_stable_audio3

    m = load_stable_audio3(_folder_with_scheduler(sa3, tmp_path, {
        "_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0,
        "stochastic_sampling": True}))
    grid = [round(float(s), 6) for s in m.schedule.sampler("", 6).sigmas[:-1]]
    assert grid != [round(s, 6) for s in m.schedule.sigmas(6)]  # the shift changes the grid
    e = m.encode_prompt(["rain"])
    with TimeLog(m) as log:
        flowedit(m, _z0(m), e, m.encode_prompt(["a bell"]), None, strengths=[1.0], steps=6, guidance=1.0, seed=0)
    assert log.times == grid


# 4 ---------------------------------------------------------------------------------------------------------------
def test_flowedit_strength_is_the_start_sigma_and_equal_starts_run_once(sa3):
    """Strength = the σ FlowEdit starts from (as SDEdit's init_noise_level): the first network call is at the first
    grid σ ≤ strength; strengths that land on the same step are one take, computed once."""
    from engine.flowedit import flowedit

    z0 = _z0(sa3)
    e, t = sa3.encode_prompt(["rain"]), sa3.encode_prompt(["a bell"])
    grid = sa3.schedule.grid(12)
    with TimeLog(sa3) as log:
        out = flowedit(sa3, z0, e, t, None, strengths=[0.5], steps=12, guidance=1.0, seed=0)
    start = next(i for i, s in enumerate(grid) if s <= 0.5)
    assert log.times[0] == round(grid[start], 6) and len(log.times) == 12 - start
    batches = []
    inner = type(sa3).predict_noise.__get__(sa3)
    sa3.predict_noise = lambda z, tt, c: (batches.append(z.shape[0]), inner(z, tt, c))[1]
    try:
        both = flowedit(sa3, z0, e, t, None, strengths=[0.5, 0.5 - 1e-4, 0.9], steps=12, guidance=1.0, seed=0)
    finally:
        del sa3.predict_noise
    draws = 2
    assert max(batches) == draws * (1 + 2)  # the source rows + two distinct starts, not three takes
    assert torch.equal(both[0], both[1])
    torch.testing.assert_close(both[:1], out, rtol=0, atol=1e-5)  # a take equals its solo run


def test_flowedit_has_its_own_default_step_count_by_device(sa3):
    """On CUDA the paper's 28-step grid; without CUDA the coarsest grid on which the strongest take still runs
    CPU_CALLS steps (issue 25: a preview a CPU can afford); SDEdit keeps the model's own 8."""
    from engine.editor import Editor
    from engine.flowedit import CPU_CALLS, DEFAULT_STEPS, default_steps
    from engine.params import EditParams

    ed = Editor(sa3)
    steps = ed.resolve_params(EditParams("a bell", mode="flowedit", etas=(0.5, 0.9))).sample_steps
    grid = sa3.schedule.grid(steps)
    assert steps < DEFAULT_STEPS and steps - sa3.schedule.start_step(0.9, grid) == CPU_CALLS
    assert default_steps(sa3.schedule, (0.5, 0.9), "cuda") == DEFAULT_STEPS >= 24
    assert ed.resolve_params(EditParams("a bell", mode="sdedit")).sample_steps == sa3.default_steps == 8


# 6 ---------------------------------------------------------------------------------------------------------------
class DeviceLog(torch.overrides.TorchFunctionMode):
    """A second device simulated on the CPU, to show which host↔device transfers a sampling loop would make on a
    GPU (as issue-17's defect-5 test checks the host-side decision that avoids a sync, here for the whole loop).

    Tensors made on the host — factories without an explicit device from engine code, draws from a CPU generator,
    tables built by the scheduler, and anything computed from host tensors only — are tagged "host"; everything
    else (the model's weights and inputs, the network's outputs, explicit device factories and ``.to(device)``
    results of engine code) is on "the device". Both are the CPU, so a device named by library code (a scheduler
    moving a timestep next to its own tables) cannot be told apart: it is taken to be the host. Once the loop runs
    (from the first network call), each host→device copy (``.to(device)`` of a host tensor, a tensor made from
    Python data with ``device=``, a host tensor that is not a 0-dim scalar meeting device tensors) and each
    device→host read (``item``, ``tolist``, ``float``, ``nonzero``, …) is logged. The network's own internals are
    not traced (they run once per step on device inputs)."""

    SYNCS = frozenset({"item", "tolist", "__float__", "__int__", "__bool__", "__index__", "nonzero", "numpy", "cpu"})
    FROM_DATA = frozenset({"tensor", "as_tensor", "from_numpy"})

    def __init__(self, model, *, code: tuple[str, ...] = ()):
        import os

        import engine

        super().__init__()
        self.model, self.host, self.events, self.active, self.inside = model, {}, [], False, False
        self.code = (os.path.dirname(engine.__file__) + os.sep, *code)  # whose device names mean "the device"

    def _is_host(self, t) -> bool:
        r = self.host.get(id(t))
        return r is not None and r() is t

    def _tag(self, out, host: bool) -> None:
        import weakref

        for t in out if isinstance(out, (tuple, list)) else (out,):
            if torch.is_tensor(t):
                if host:
                    self.host[id(t)] = weakref.ref(t)
                else:
                    self.host.pop(id(t), None)

    def _caller_is_engine(self) -> bool:
        import sys

        f = sys._getframe(1)
        while f is not None and (f.f_code.co_name in ("__torch_function__", "_caller_is_engine")
                                 or f"{os.sep}torch{os.sep}" in f.f_code.co_filename):
            f = f.f_back
        return f is not None and f.f_code.co_filename.startswith(self.code)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.inside:
            return out
        name = getattr(func, "__name__", "")
        flat = [*args, *kwargs.values()]
        flat = [x for a in flat for x in (a if isinstance(a, (list, tuple)) else (a,))]
        tensors = [a for a in flat if torch.is_tensor(a)]
        host_in = [a for a in tensors if self._is_host(a)]
        if name == "__iter__":  # the rows come from an unbind the mode does not see: tag them here
            rows = list(out)
            for r in rows:
                self._tag(r, bool(host_in))
            return iter(rows)
        if name in self.SYNCS:
            if tensors and not host_in and self.active:
                self.events.append(f"device→host {name}")
            self._tag(out, True)
            return out
        if name in ("to", "cuda"):
            # A move to "the device": to a device tensor's place, or to a device named by engine code (a library
            # moving a tensor next to its own host tables, e.g. a scheduler's, is not one)
            named = any(isinstance(a, (torch.device, str)) for a in args[1:]) or kwargs.get("device") is not None
            target = (named and self._caller_is_engine()) \
                or any(torch.is_tensor(a) and not self._is_host(a) for a in args[1:])
            if not target:
                self._tag(out, bool(host_in))
            else:
                if host_in:
                    if self.active:
                        self.events.append(f"host→device {name} {tuple(args[0].shape)}")
                    if out is args[0]:  # a no-op on the CPU: a new tensor, as on a GPU, so the host one stays host
                        out = out.clone()
                self._tag(out, False)
            return out
        if not tensors:  # a factory
            gen = kwargs.get("generator")
            on_device = (kwargs.get("device") is not None and self._caller_is_engine()
                         and (gen is None or gen.device.type != "cpu"))
            if on_device and name in self.FROM_DATA and self.active:
                self.events.append(f"host→device {name}(data, device=)")
            self._tag(out, not on_device)
            return out
        if host_in and len(host_in) < len(tensors):  # host meets device
            if any(a.dim() > 0 for a in host_in) and self.active:
                self.events.append(f"host→device {name} with a host tensor {tuple(host_in[0].shape)}")
            self._tag(out, False)
            return out
        self._tag(out, bool(host_in))
        return out

    def __enter__(self):
        inner = type(self.model).predict_noise.__get__(self.model)

        def network(z_t, t, cond):
            self.active, self.inside = True, True
            try:
                return inner(z_t, t, cond)
            finally:
                self.inside = False
        self.model.predict_noise = network
        self._from_numpy = torch.from_numpy  # not overridable: the schedulers build their tables with it
        torch.from_numpy = lambda a: (t := self._from_numpy(a), self._tag(t, True))[0]
        return super().__enter__()

    def __exit__(self, *exc):
        del self.model.predict_noise
        torch.from_numpy = self._from_numpy
        return super().__exit__(*exc)


def test_the_device_log_sees_a_copy_and_a_sync(sa3):
    """The simulated device can fail: a host draw moved in the loop, and a device value read back, are logged."""
    e = sa3.encode_prompt(["rain"])
    with DeviceLog(sa3, code=(__file__,)) as log:
        sa3.predict_noise(torch.zeros(1, *SHAPE), torch.ones(1), e)  # the loop has started
        x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)).to(sa3.device)
        float(x.sum())
    assert log.events == [f"host→device to {SHAPE}", "device→host __float__"]


def test_flow_sampling_loop_makes_no_host_device_copies(sa3):
    """Ping-pong sampling (its re-noise pre-drawn, one copy before the loop), with inpainting and guidance."""
    z0 = _z0(sa3)
    keep = torch.ones(1, 1, FRAMES)
    keep[..., 2:5] = 0
    e, u = sa3.encode_prompt(["rain"]), sa3.encode_prompt([""])
    with DeviceLog(sa3) as log:
        sample(sa3, [e, e], u, latent_shape=SHAPE, steps=4, guidance=3.0, seed=0, z_ref=z0, keep=keep)
    assert log.active and log.events == []
    with DeviceLog(sa3) as log:
        sample(sa3, [e], None, latent_shape=SHAPE, steps=4, guidance=1.0, seed=0, z_ref=z0, strength=0.6)
    assert log.active and log.events == []


def test_flowedit_loop_makes_no_host_device_copies(sa3):
    """Noise and time inputs made before the loop; the active takes are a prefix (no index tensor per step)."""
    from engine.flowedit import flowedit

    z0 = _z0(sa3)
    keep = torch.ones(1, 1, FRAMES)
    keep[..., 2:5] = 0
    e, t, u = sa3.encode_prompt(["rain"]), sa3.encode_prompt(["a bell"]), sa3.encode_prompt([""])
    with DeviceLog(sa3) as log:
        flowedit(sa3, z0, e, t, u, strengths=[1.0, 0.6, 0.9], steps=6, guidance=3.0, seed=0, keep=keep)
    assert log.active and log.events == []


def test_flowedit_builds_each_batch_conditioning_once(sa3, monkeypatch):
    """The conditioning of a step's batch is cached per number of active takes, not rebuilt every step."""
    from engine.flowedit import flowedit
    from engine.models.base import Conditioning

    built = []
    cat = Conditioning.cat
    monkeypatch.setattr(Conditioning, "cat", staticmethod(lambda items: (built.append(len(items)), cat(items))[1]))
    e, t = sa3.encode_prompt(["rain"]), sa3.encode_prompt(["a bell"])
    flowedit(sa3, _z0(sa3), e, t, None, strengths=[1.0, 0.6], steps=8, guidance=1.0, seed=0)
    assert len(built) == 2  # one active take, then two


# 7 ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["dpm", "ddim"])
def test_sdedit_take_equals_its_solo_run_with_every_sampler(tiny_model, sampler):
    """DPM-Solver++ keeps its multistep history per scheduler, not per row: strengths that share a loop would
    give a late take a second-order step built on its ride-along prediction (1.51 max difference measured)."""
    shape = (8, 16, 16)
    z_ref = torch.randn((1, *shape), generator=torch.Generator().manual_seed(1))
    e, u = tiny_model.encode_prompt(["a beep"]), tiny_model.encode_prompt([""])
    kw = dict(latent_shape=shape, steps=10, guidance=2.0, seed=3, z_ref=z_ref, sampler=sampler)
    together = sample(tiny_model, [e, e, e], u, strength=[1.0, 0.5, 1.0], **kw)
    alone = sample(tiny_model, [e], u, strength=0.5, **kw)
    torch.testing.assert_close(together[1:2], alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(together[0], together[2], rtol=0, atol=0)  # equal strengths share one loop


# 8 ---------------------------------------------------------------------------------------------------------------
def test_flowedit_guides_the_source_only_with_a_source_prompt(sa3):
    """Without a source prompt the source rows are the unconditional branch alone (no CFG rows wasted on them);
    with one they get their own scale, ``source_guidance``."""
    from engine.flowedit import flowedit

    z0 = _z0(sa3)
    e, t, u = sa3.encode_prompt(["rain"]), sa3.encode_prompt(["a bell"]), sa3.encode_prompt([""])
    kw = dict(strengths=[1.0, 0.9], steps=4, guidance=3.0, seed=0)
    sizes = []
    inner = type(sa3).predict_noise.__get__(sa3)
    sa3.predict_noise = lambda z, tt, c: (sizes.append(z.shape[0]), inner(z, tt, c))[1]
    try:
        plain = flowedit(sa3, z0, None, t, u, **kw)
        no_src = sizes[-1]
        a = flowedit(sa3, z0, e, t, u, source_guidance=1.5, **kw)
        b = flowedit(sa3, z0, e, t, u, source_guidance=4.0, **kw)
    finally:
        del sa3.predict_noise
    draws, takes = 2, 2
    assert no_src == draws + 2 * draws * takes  # not 2·(draws + draws·takes)
    assert sizes[-1] == 2 * draws + 2 * draws * takes
    assert (a - b).abs().max() > 1e-4 and (a - plain).abs().max() > 1e-4


# 12 --------------------------------------------------------------------------------------------------------------
def test_inversion_reads_the_schedule_not_the_family_scheduler(sa3):
    """A third ᾱ-family adapter may name its scheduler otherwise: inversion reads ᾱ and the prediction type from
    ``model.schedule``; on a flow model it refuses instead of reading a table that means something else."""
    from engine.inversion import ddim_invert
    from engine.models.audioldm import tiny_audioldm

    m = tiny_audioldm()
    cond = m.encode_prompt(["a beep"])
    z0 = torch.randn((1, 8, 16, 16), generator=torch.Generator().manual_seed(0))
    ref = ddim_invert(m, z0, cond, steps=3)
    schedule = m.schedule  # an adapter that keeps its scheduler under another name, behind the same schedule
    m.__class__ = type("Renamed", (type(m),), {"schedule": property(lambda self: schedule)})
    m.scheduler = None
    torch.testing.assert_close(ddim_invert(m, z0, cond, steps=3), ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="ᾱ-schedule"):
        ddim_invert(sa3, _z0(sa3), sa3.encode_prompt(["rain"]), steps=3)


# 5 ---------------------------------------------------------------------------------------------------------------
def test_the_logsnr_training_draw_stays_in_the_samplers_range(sa3):
    """The measured alternative (docs/quality.md): σ uniform in the sampler's log-SNR range; U(0, 1) is the default."""
    from engine.schedules import FlowSchedule

    z0 = torch.zeros(4096, *SHAPE)
    t_u, _ = sa3.schedule.draw(z0, torch.Generator().manual_seed(0))
    alt = FlowSchedule(sa3.scheduler)
    alt.training_sigma = "logsnr"
    t_l, _ = alt.draw(z0, torch.Generator().manual_seed(0))
    assert sa3.schedule.training_sigma == "uniform" and float((t_u > 0.85).float().mean()) < 0.2
    lo, hi = torch.sigmoid(torch.tensor([-2.0, 6.2]))
    assert float(t_l.min()) >= float(lo) - 1e-6 and float(t_l.max()) <= float(hi) + 1e-6
    assert 0.5 < float((t_l > 0.85).float().mean()) < 0.6  # λ < −1.73: (6.2 − 1.73) / 8.2 ≈ 0.54 of the draws
