"""``aiedit models list|pull|verify`` offline: the shipped toy model, fake hub-cache snapshots, broken copies."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_model_auto import TANGO, audioldm_files, fake_snapshot

from engine.models.registry import SHIPPED
from engine.models_cli import main

ROOT = Path(__file__).resolve().parent.parent
TOY = SHIPPED["toy"][1]


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "AIEDIT_MODEL_DIRS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AIEDIT_CONFIG", str(tmp_path / "no-config.toml"))
    return cache


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    got = capsys.readouterr()
    return code, got.out + got.err


def line_of(text: str, name: str) -> str:
    return next(ln for ln in text.splitlines() if ln.startswith(name + " "))


def test_list_shows_toy_present_and_real_models_missing_with_their_pull_commands(hub, capsys):
    code, out = run(capsys, "list")
    assert code == 0
    assert "present" in line_of(out, "toy") and str(TOY) in line_of(out, "toy")
    for name in ("tango", "audioldm2", "audioldm"):
        assert "missing" in line_of(out, name)
        assert f"get it: aiedit models pull {name}" in out
    assert "needs google/flan-t5-large" in out and "needs laion/clap-htsat-unfused" in out
    assert "--model auto → toy" in out and str(hub) in out


def test_list_shows_a_cached_model_as_present_with_its_size(hub, capsys):
    snap = fake_snapshot(hub, "cvssp/audioldm2", audioldm_files("AudioLDM2Pipeline"))
    (snap / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x" * 5_000_000)
    code, out = run(capsys, "list")
    assert code == 0
    row = line_of(out, "audioldm2")
    assert "present" in row and str(snap) in row and "5.0 MB" in row
    assert "--model auto → audioldm2" in out
    assert "aiedit models pull audioldm2\n" not in out


def test_verify_passes_on_the_shipped_toy_model(capsys):
    code, out = run(capsys, "verify", "toy")
    assert code == 0, out
    assert "FAIL" not in out and "unet: 250 tensors" in out and "toy CLAP" in out


def toy_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "toy-copy"
    shutil.copytree(TOY, dst)
    return dst


def test_verify_names_a_truncated_weight_file(tmp_path, capsys):
    folder = toy_copy(tmp_path)
    w = folder / "unet" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    code, out = run(capsys, "verify", str(folder))
    assert code == 1
    fail = [ln for ln in out.splitlines() if ln.strip().startswith("FAIL")]
    assert fail[0].strip().startswith("FAIL unet/diffusion_pytorch_model.safetensors") and "truncated" in fail[0]


@pytest.mark.parametrize(("component", "key", "value", "needle"), [
    ("unet", "in_channels", 4, "in_channels = 4"),
    ("vae", "latent_channels", 4, "latent_channels"),
    ("vocoder", "model_in_dim", 128, "model_in_dim = 128"),
    ("text_encoder", "hidden_size", 32, "hidden size = 32"),
])
def test_verify_names_a_config_that_disagrees_with_the_weights(tmp_path, capsys, component, key, value, needle):
    folder = toy_copy(tmp_path)
    cfg_path = folder / component / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg[key] = value
    cfg_path.write_text(json.dumps(cfg))
    code, out = run(capsys, "verify", str(folder))
    assert code == 1
    fail = [ln for ln in out.splitlines() if ln.strip().startswith("FAIL")]
    assert len(fail) == 1 and fail[0].strip().startswith(f"FAIL {component}:") and needle in fail[0], out


def test_verify_names_a_missing_component_and_a_broken_tango_checkpoint(tmp_path, capsys):
    folder = toy_copy(tmp_path)
    shutil.rmtree(folder / "vae")
    code, out = run(capsys, "verify", str(folder))
    assert code == 1 and "FAIL vae: folder vae/ is missing" in out
    tango = tmp_path / "tango"
    tango.mkdir()
    for name, text in {**TANGO, "spiece.model": "x", "vae_config.json": '{"scale_factor": 1.0}'}.items():
        (tango / name).write_text(text)
    code, out = run(capsys, "verify", str(tango))
    assert code == 1 and "FAIL pytorch_model_main.bin: cannot open as a PyTorch checkpoint" in out


def test_verify_a_model_that_is_not_here_says_how_to_get_it(hub, capsys):
    code, out = run(capsys, "verify", "tango")
    assert code == 1 and "aiedit models pull tango" in out


def test_pull_offline_says_exactly_what_to_copy_where(hub, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out = run(capsys, "pull", "tango")
    assert code == 1
    assert "hf download declare-lab/tango" in out and "hf download google/flan-t5-large" in out
    assert f"models--declare-lab--tango/  →  {hub / 'models--declare-lab--tango'}/" in out
    assert run(capsys, "pull", "toy") == (0, "toy ships with aiedit: nothing to pull\n")
    assert run(capsys, "pull", "wavenet")[0] == 2


def test_pull_with_an_unreachable_hub_fails_fast_with_the_copy_instructions(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0",
           "HF_ENDPOINT": "http://127.0.0.1:9", "AIEDIT_CONFIG": str(tmp_path / "none.toml")}
    env.pop("HF_HUB_CACHE", None)
    proc = subprocess.run([sys.executable, "-m", "bridge", "models", "pull", "audioldm"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "cannot fetch cvssp/audioldm-s-full-v2" in proc.stderr and "copy these folders" in proc.stderr
    assert not any((tmp_path / "hf").rglob("*.safetensors"))


def test_verify_names_a_missing_shard(tmp_path, capsys):
    folder = toy_copy(tmp_path)
    unet = folder / "unet"
    (unet / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"conv_in.weight": "diffusion_pytorch_model.safetensors",
                        "conv_out.weight": "diffusion_pytorch_model-00002-of-00002.safetensors"}}))
    code, out = run(capsys, "verify", str(folder))
    assert code == 1 and "missing shard(s): diffusion_pytorch_model-00002-of-00002.safetensors" in out


def sa3_folder(base: Path, alias: str) -> Path:
    folder = base / alias
    for part in ("transformer", "vae", "text_encoder", "duration_embedder"):
        (folder / part).mkdir(parents=True)
        (folder / part / "config.json").write_text("{}")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableAudio3Pipeline"}))
    return folder


def test_list_shows_both_sa3_sizes_missing_with_their_pull_commands(hub, capsys):
    code, out = run(capsys, "list")
    assert code == 0
    for name, repo in (("sa3-small", "stabilityai/stable-audio-3-small-sfx"),
                       ("sa3-medium", "stabilityai/stable-audio-3-medium")):
        row = line_of(out, name)
        assert "stable-audio-3" in row and "missing" in row and repo in row
        assert f"get it: aiedit models pull {name}" in out
    assert "gated: accept the licence" in out


def test_pull_sa3_explains_the_gated_licence_and_offline_what_to_copy(hub, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_never_printed")
    home = tmp_path / "converted"
    monkeypatch.setenv("AIEDIT_MODELS_HOME", str(home))
    code, out = run(capsys, "pull", "sa3-medium")
    assert code == 1
    assert "Stability AI Community License" in out and "https://huggingface.co/stabilityai/stable-audio-3-medium" in out
    assert "hf auth login" in out and "HF_TOKEN" in out and "never stores a token" in out
    assert "hf_secret_never_printed" not in out
    assert "google/t5gemma-b-b-ul2 is gated under Gemma's terms of use" in out
    assert "DIR/model.safetensors" in out and "DIR/t5gemma-b-b-ul2/" in out
    assert "aiedit models pull sa3-medium --from DIR" in out and str(home / "sa3-medium") in out
    assert not home.exists()


def test_a_converted_sa3_folder_is_present_verified_and_preferred_by_auto(hub, capsys, monkeypatch, tmp_path):
    from engine.models.inventory import resolve_auto
    from engine.models.registry import resolve

    fake_snapshot(hub, "declare-lab/tango", TANGO)
    fake_snapshot(hub, "google/flan-t5-large", {"tokenizer_config.json": "{}"})
    assert resolve_auto()[0] == "tango"
    home = tmp_path / "converted"
    monkeypatch.setenv("AIEDIT_MODELS_HOME", str(home))
    fake_snapshot(hub, "stabilityai/stable-audio-3-small-sfx", {"model.safetensors": "junk",
                                                               "model_config.json": "{}"})
    _, out = run(capsys, "list")
    assert "missing" in line_of(out, "sa3-small") and "not converted yet" in out  # downloaded, not usable
    assert resolve_auto()[0] == "tango"
    folder = sa3_folder(home, "sa3-small")
    assert resolve_auto()[0] == "sa3-small"
    spec = resolve("sa3-small")
    assert spec.family == "stable-audio-3" and spec.source == str(folder)
    _, out = run(capsys, "list")
    assert "present" in line_of(out, "sa3-small") and "--model auto → sa3-small" in out


def test_inventory_no_longer_imports_the_registry_and_the_catalog_needs_no_torch():
    code = ("import sys; import engine.models.inventory, engine.models.catalog; "
            "print('engine.models.registry' in sys.modules, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["False", "False"], proc.stderr
