"""The next step to a first real edit: which model fits this machine for music and for sound effects (catalog data,
memory faked), and ``aiedit selftest`` — a measured short edit scaled to a 10 s item, plus the bug-report block."""

from __future__ import annotations

import io
import json

import pytest
import torch

from engine import devices
from engine.models import catalog, fit
from engine.selftest import FIXED, make_clip, scale, windows_for


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("AIEDIT_MODELS_HOME", str(tmp_path / "models"))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "AIEDIT_MODEL_DIRS"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_the_best_model_per_kind_is_the_specialist_that_fits(store):
    assert fit.best_for("music", 2.0) is None and fit.best_for("sound effects", 3.9) is None
    assert fit.best_for("music", 4.0) == "sa3-small-music" and fit.best_for("sound effects", 4.0) == "sa3-small"
    assert fit.best_for("sound effects", 48.0) == "sa3-small"  # a specialist before the general medium model
    assert fit.best_for("general", 16.0) == "sa3-medium"
    assert catalog.kind_of("sa3-medium-base") == "general" and catalog.memory_gib("tango") == 11.0


def test_ace_step_takes_part_through_catalog_data_alone():
    """Issue 23's family (kind music, its own ACE_GPU_GIB table, first in auto's music order) joins the ranking
    without a line of fit.py naming it."""
    assert catalog.memory_gib("ace-step") == 10.0 and catalog.kind_of("ace-step-sft") == "music"
    assert fit.best_for("music", 12.0) == "ace-step"
    assert fit.best_for("music", 8.0) == "sa3-small-music"  # ACE-Step needs ≈10 GiB
    assert fit.best_for("sound effects", 12.0) == "sa3-small"
    assert fit.smallest_for("music") == ("sa3-small-music", 4.0)


def test_next_steps_name_the_pull_or_the_selftest(store):
    music, sfx = fit.next_steps(fit.Memory("cuda", 8.0, "8.0 GiB free on GPU 0 (test)"))
    assert music.startswith("music: sa3-small-music (needs ≈4 GiB; 8.0 GiB free on GPU 0 (test))")
    assert "`aiedit models pull sa3-small-music` (gated" in music
    assert "`aiedit selftest --model sa3-small-music`" in music
    music = fit.next_steps(fit.Memory("cuda", 12.0, "x"))[0]  # ACE-Step fits: ungated, so no licence step
    assert music == ("music: ace-step (needs ≈10 GiB; x): get it with `aiedit models pull ace-step`, then "
                     "`aiedit selftest --model ace-step`")
    converted = store / "models" / "sa3-small"
    for part in ("transformer", "vae", "text_encoder", "duration_embedder", "tokenizer", "scheduler"):
        (converted / part).mkdir(parents=True)
    (converted / "model_index.json").write_text(json.dumps({"_class_name": "StableAudio3Pipeline"}))
    sfx = fit.next_steps(fit.Memory("cuda", 12.0, "x"))[1]
    assert "on this machine — measure it: `aiedit selftest --model sa3-small`" in sfx and "pull" not in sfx
    cpu = fit.next_steps(fit.Memory("cpu", 2.0, "2.0 GiB of RAM"))
    assert cpu[0].startswith("music: no model aiedit knows fits in 2.0 GiB (the smallest, sa3-small-music")
    assert "`aiedit selftest --model toy`" in cpu[0] and "many minutes on a CPU" in cpu[-1]


def test_an_apple_gpu_counts_its_recommended_working_set(monkeypatch):
    monkeypatch.setattr(devices, "_warned", True)
    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: True)
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 24 * 2**30, raising=False)
    mem = fit.machine_memory("auto")
    assert mem.device == "mps" and mem.gib == pytest.approx(24.0) and "Apple GPU" in mem.what
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    cpu = fit.machine_memory(None)
    assert cpu.device == "cpu" and cpu.gib > 0 and "RAM" in cpu.what


def test_scaling_takes_each_stages_slope_and_counts_fixed_costs_once_per_edit_or_window():
    # a stage costing 0.5 s fixed + 0.1 s per step: 2 steps → 0.7 s, 12 steps → 1.7 s
    small_t = {"prepare": 1.0, "score": 0.5, "decode": 0.4, "finetune": 0.7, "sample": 0.3}
    large_t = {"prepare": 1.0, "score": 0.5, "decode": 0.4, "finetune": 1.7, "sample": 0.9}
    small = {"tune_steps": 2, "sample_steps": 2}
    large = {"tune_steps": 12, "sample_steps": 8}
    default = {"tune_steps": 100, "sample_steps": 50}
    fixed = sum(large_t.get(k, 0.0) for k in FIXED)
    one = 0.4 + (0.5 + 0.1 * 100) + (0.1 + 0.1 * 50)
    assert scale(small_t, large_t, small, large, default, 1, 1) == pytest.approx(fixed + one)
    assert scale(small_t, large_t, small, large, default, 1, 3) == pytest.approx(fixed + 3 * one)
    # measured over 2 windows: per-window figures are halved before they are scaled
    doubled = {k: (v if k in FIXED else 2 * v) for k, v in large_t.items()}
    doubled_small = {k: (v if k in FIXED else 2 * v) for k, v in small_t.items()}
    assert scale(doubled_small, doubled, small, large, default, 2, 3) == pytest.approx(fixed + 3 * one)
    zeta_s, zeta_l = {"invert": 0.5, "sample": 0.5}, {"invert": 1.1, "sample": 1.1}  # inversion scales with sampling
    assert scale(zeta_s, zeta_l, {"sample_steps": 2}, {"sample_steps": 8}, {"sample_steps": 32}, 1, 1) == \
        pytest.approx(2 * (0.3 + 0.1 * 32))


def test_windows_of_a_10_second_item_follow_the_models_window():
    from types import SimpleNamespace

    assert windows_for(SimpleNamespace(sample_rate=16000, max_seconds=10.24), 10.0) == 1
    assert windows_for(SimpleNamespace(sample_rate=44100, max_seconds=30.0), 10.0) == 1
    assert windows_for(SimpleNamespace(sample_rate=16000, max_seconds=2.56), 10.0) == 5  # the toy: 0.64 s overlaps


def test_selftest_on_tiny_prints_measured_and_scaled_figures_and_a_report(tmp_path):
    from engine.selftest import run

    buf = io.StringIO()
    assert run("tiny", "cpu", out=buf) == 0
    text = buf.getvalue()
    assert "aiedit selftest: tiny on cpu (float32 weights)" in text
    assert "preview (zeta)" in text and "deep edit (lora)" in text
    assert "warm-up" in text and "not counted" in text
    assert text.count("measured: two edits") == 2 and text.count("  10 s item") == 2
    assert "scaled to the defaults'" in text
    assert "200 embedding + 375 fine-tune + 25 sampling steps × 1 window" in text
    report = text[text.index("--- aiedit self-test report"):]
    for needle in ("nothing was sent anywhere", "torch 2.", "diffusers ", "cuda: ", "mps: ", "device: cpu (asked for)",
                   "model: tiny", "selftest: lora ≈"):
        assert needle in report, needle


def test_the_generated_clip_is_deterministic_stereo(tmp_path):
    import soundfile as sf

    a, b = make_clip(tmp_path / "a.wav", 2.0), make_clip(tmp_path / "b.wav", 2.0)
    x, sr = sf.read(str(a), always_2d=True)
    assert sr == 44100 and x.shape == (88200, 2) and (x == sf.read(str(b), always_2d=True)[0]).all()
    assert 0.1 < abs(x).max() <= 0.8 + 1e-6  # float32


def test_the_console_script_dispatches_selftest():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    top = subprocess.run([sys.executable, "-m", "bridge", "--help"], capture_output=True, text=True, timeout=60,
                         env=env)
    assert "selftest" in top.stdout
    own = subprocess.run([sys.executable, "-m", "bridge", "selftest", "--help"], capture_output=True, text=True,
                         timeout=60, env=env)
    assert own.returncode == 0 and "--model" in own.stdout and "10 s item" in own.stdout
