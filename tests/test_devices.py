"""Device choice and the weight dtype per device (engine/devices.py, engine/precision.py), with the CUDA and Apple
GPU (MPS) availability probes faked: no Mac was available, so this is what is checked of Apple Silicon here."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_clip

from engine import devices, precision
from engine.errors import InputError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def probes(monkeypatch):
    """Set which accelerators 'exist': probes(cuda=..., mps=..., built=...)."""
    monkeypatch.setattr(devices, "_warned", False)

    def fake(*, cuda: bool = False, mps: bool = False, built: bool = True) -> None:
        monkeypatch.setattr(devices, "cuda_available", lambda: cuda)
        monkeypatch.setattr(devices, "mps_available", lambda: mps)
        monkeypatch.setattr(devices, "mps_built", lambda: built)
    return fake


@pytest.mark.parametrize(("cuda", "mps", "want"), [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu"),
                                                   (True, False, "cuda")])
def test_auto_takes_cuda_then_the_apple_gpu_then_the_cpu(probes, cuda, mps, want):
    probes(cuda=cuda, mps=mps)
    assert devices.resolve_device(None) == devices.resolve_device("auto") == want


def test_named_devices_are_checked_and_an_absent_one_is_one_line(probes):
    probes(cuda=False, mps=False, built=False)
    assert devices.resolve_device("cpu") == "cpu"
    with pytest.raises(InputError) as no_build:
        devices.resolve_device("mps")
    probes(cuda=False, mps=False, built=True)
    with pytest.raises(InputError) as no_mac:
        devices.resolve_device("MPS")
    with pytest.raises(InputError) as no_cuda:
        devices.resolve_device("cuda:1")
    with pytest.raises(InputError) as bad:
        devices.resolve_device("tpu")
    for exc in (no_build, no_mac, no_cuda, bad):
        assert "\n" not in str(exc.value)
    assert "built without it" in str(no_build.value) and "--device cpu" in str(no_build.value)
    assert "Apple Silicon Mac with macOS 12.3" in str(no_mac.value)
    assert "no CUDA GPU" in str(no_cuda.value) and "mps" in str(bad.value)
    probes(cuda=True, mps=True)
    assert devices.resolve_device("mps") == "mps" and devices.resolve_device("cuda:1") == "cuda:1"


def test_weights_stay_fp32_on_an_apple_gpu_and_bf16_only_on_a_cuda_gpu_that_has_it(monkeypatch):
    assert precision.resolve("auto", "mps") == torch.float32
    assert precision.resolve("auto", "cpu") == torch.float32
    assert precision.resolve("bf16", "mps") == torch.bfloat16  # asked for explicitly: honoured
    assert precision.resolve("fp32", "cuda") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision.resolve("auto", "cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert precision.resolve("auto", "cuda") == torch.float32


def test_the_apple_gpu_says_once_what_it_does_with_missing_operations(probes, caplog, monkeypatch):
    probes(mps=True)
    monkeypatch.setenv(devices.FALLBACK_ENV, "1")
    with caplog.at_level(logging.WARNING, logger="aiedit.engine"):
        devices.resolve_device("auto")
        devices.resolve_device("mps")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "fp32" in lines[0] and "run on the CPU" in lines[0]
    caplog.clear()
    monkeypatch.setattr(devices, "_warned", False)
    monkeypatch.setenv(devices.FALLBACK_ENV, "0")
    with caplog.at_level(logging.WARNING, logger="aiedit.engine"):
        devices.resolve_device("mps")
    assert "is not set" in caplog.records[0].getMessage()


def test_the_fallback_is_switched_on_before_torch_is_imported_on_macos_only(monkeypatch):
    monkeypatch.delenv(devices.FALLBACK_ENV, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    devices.enable_mps_fallback()
    assert devices.FALLBACK_ENV not in os.environ
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setenv(devices.FALLBACK_ENV, "0")  # the user's own choice stays
    devices.enable_mps_fallback()
    assert os.environ[devices.FALLBACK_ENV] == "0"
    code = ("import os, sys; sys.platform = 'darwin'; import engine; "
            f"print(os.environ.get('{devices.FALLBACK_ENV}'), 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != devices.FALLBACK_ENV} | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["1", "False"], proc.stderr


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has an Apple GPU")
def test_edit_on_mps_where_there_is_none_is_one_line(tmp_path):
    clip = tmp_path / "in.wav"
    write_clip(clip, seconds=0.5)
    proc = subprocess.run([sys.executable, "-m", "bridge", "edit", str(clip), "--prompt", "a bell", "--model", "tiny",
                           "--device", "mps", "--out", str(tmp_path / "out")],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and "--device mps: no Apple GPU" in err[0], proc.stderr
    assert not (tmp_path / "out").exists()
