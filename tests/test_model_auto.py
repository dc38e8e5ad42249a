"""``--model auto``: the best real model found on disk (never loaded to decide, never downloaded), else the shipped
toy model with a warning; ``tiny`` (random weights) only when named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.models.inventory import TOY_WARNING, best_present, resolve_auto
from engine.models.registry import resolve

ROOT = Path(__file__).resolve().parent.parent


def fake_snapshot(cache: Path, repo: str, files: dict[str, str], rev: str = "0123abcd") -> Path:
    """A hub-cache snapshot in huggingface_hub's layout; weight files hold junk (detection must not read them)."""
    base = cache / ("models--" + repo.replace("/", "--"))
    snap = base / "snapshots" / rev
    snap.mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(rev)
    for name, text in files.items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).write_text(text)
    return snap


def audioldm_files(cls: str = "AudioLDMPipeline") -> dict[str, str]:
    return {"model_index.json": json.dumps({"_class_name": cls}), "unet/diffusion_pytorch_model.safetensors": "junk"}


TANGO = {"main_config.json": "{}", "vae_config.json": "{}", "pytorch_model_main.bin": "junk",
         "pytorch_model_vae.bin": "junk"}


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.delenv("AIEDIT_MODEL_DIRS", raising=False)
    monkeypatch.setenv("AIEDIT_CONFIG", str(tmp_path / "no-config.toml"))
    return cache


def test_an_empty_machine_gets_the_toy_model_with_a_warning_never_tiny(hub):
    assert best_present() is None
    spec, warning = resolve_auto()
    assert spec == "toy" and warning == TOY_WARNING and "toy world" in warning
    assert resolve("auto").name == "toy"


def test_the_best_cached_model_wins_tango_over_audioldm2_over_audioldm(hub):
    fake_snapshot(hub, "cvssp/audioldm-s-full-v2", audioldm_files())
    assert resolve_auto() == ("audioldm", None)
    assert resolve("auto").family == "audioldm" and resolve("auto").source == "cvssp/audioldm-s-full-v2"
    fake_snapshot(hub, "cvssp/audioldm2", audioldm_files("AudioLDM2Pipeline"))
    assert resolve_auto() == ("audioldm2", None)
    # TANGO without its FLAN-T5 tokenizer cannot load: it is listed as lacking that, and not picked.
    fake_snapshot(hub, "declare-lab/tango", TANGO)
    assert resolve_auto() == ("audioldm2", None)
    fake_snapshot(hub, "google/flan-t5-large", {"tokenizer_config.json": "{}", "spiece.model": "junk"})
    assert resolve_auto() == ("tango", None)
    assert resolve("auto").family == "tango"


def test_an_incomplete_snapshot_is_not_picked(hub):
    snap = fake_snapshot(hub, "declare-lab/tango2", {**TANGO, "tokenizer_config.json": "{}"})
    (snap / "pytorch_model_vae.bin").unlink()
    assert resolve_auto()[0] == "toy"


def test_a_model_in_a_configured_folder_is_found_by_layout(hub, tmp_path, monkeypatch):
    models = tmp_path / "models"
    folder = models / "my-tango"
    folder.mkdir(parents=True)
    for name, text in {**TANGO, "spiece.model": "junk"}.items():
        (folder / name).write_text(text)
    monkeypatch.setenv("AIEDIT_MODEL_DIRS", str(models))
    spec, warning = resolve_auto()
    assert spec == str(folder) and warning is None
    assert resolve("auto").family == "tango"


def test_serve_and_edit_default_to_auto():
    from bridge.commands.parser import build_parser
    from engine.cli import build_parser as edit_parser

    assert build_parser().parse_args(["serve"]).model == "auto"
    assert edit_parser().parse_args(["x.wav", "--prompt", "p"]).model == "auto"


def test_serve_without_model_loads_the_toy_model_and_says_so(tmp_path):
    """The daemon REAPER starts with the default command must not load random weights."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1",
           "AIEDIT_CONFIG": str(tmp_path / "none.toml")}
    env.pop("HF_HUB_CACHE", None)
    env.pop("AIEDIT_MODEL_DIRS", None)
    err = tmp_path / "stderr.txt"
    with open(err, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--spool", str(tmp_path / "spool"),
                                 "--port", "0", "--preload"], cwd=tmp_path, env=env, stderr=fh,
                                stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "loaded" not in err.read_text() and proc.poll() is None:
            time.sleep(0.2)
        text = err.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "knows only the toy world" in text, text
    assert "model toy loaded" in text, text
    assert "model tiny" not in text
