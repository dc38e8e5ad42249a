"""``aiedit models pull sa3-*``: our own conversion of a Stable Audio 3 checkpoint in Stability's layout (built from
the published model code: tests/sa3_reference.py names the files and the commit), from a folder copied by hand and
from a hub stand-in on 127.0.0.1 that drops a connection half way; the free-space check; the token never shown.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from fake_hub import FakeHub
from sa3_reference import reference_config, reference_state_dict, tiny_model, write_checkpoint, write_text_encoder

from engine.models import download
from engine.models.convert_sa3 import ConversionError, plan_conversion
from engine.models_cli import main

SA3_REPO = "stabilityai/stable-audio-3-small-sfx"
T5 = "google/t5gemma-b-b-ul2"
SECRET = "hf_test_secret_never_shown_4711"
PROMPT = "a door creaks open"
FRAMES = 24


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(0)


@pytest.fixture
def homes(tmp_path, monkeypatch) -> Path:
    """Every model store in a temporary folder (as the other models_cli tests do), no config file."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("AIEDIT_MODELS_HOME", str(tmp_path / "models"))
    monkeypatch.setenv("AIEDIT_CONFIG", str(tmp_path / "no-config.toml"))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "AIEDIT_MODEL_DIRS", "HF_HUB_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    return tmp_path


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    got = capsys.readouterr()
    return code, got.out + got.err


def assert_same_model(tiny, name: str = "sa3-small") -> None:
    """The converted folder loads as ``--model NAME`` with the tiny diffusers model's weights exactly, and generates
    exactly what that model generates for one seed."""
    from diffusers import StableAudio3Pipeline

    from engine.models.registry import load_model
    from engine.models.stable_audio3 import pipeline_of

    loaded = load_model(name)
    assert loaded.name == name and loaded.default_steps == 8  # rf_denoiser → the distilled 8-step ping-pong
    for part in ("unet", "vae", "duration_embedder", "text_encoder"):
        ours, theirs = getattr(loaded, part).state_dict(), getattr(tiny, part).state_dict()
        assert ours.keys() == theirs.keys(), part
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), part
    seconds = FRAMES * tiny.downsampling / tiny.sample_rate

    def generate(m) -> torch.Tensor:
        return pipeline_of(m, StableAudio3Pipeline)(PROMPT, duration=seconds, num_inference_steps=8,
                                                    generator=torch.Generator().manual_seed(11)).audios

    ref = generate(tiny)
    assert ref.shape[1] == 2 and torch.allclose(generate(loaded), ref, atol=1e-5, rtol=0)
    # Bit for bit once the loaded weights sit in ordinary allocations: tensors memory-mapped from safetensors start
    # at arbitrary offsets, and the CPU kernels then sum in another order (≈ 4e-7 apart; measured here).
    for module in loaded.modules().values():
        for p in module.parameters():
            p.data = p.data.clone()
    assert torch.equal(generate(loaded), ref)


def test_pull_from_a_hand_copied_checkpoint_converts_and_loads_exactly(tiny, homes, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # --from needs no network
    src = write_checkpoint(tiny, homes / "copied by hand — Müller 音")
    code, out = run(capsys, "pull", "sa3-small", "--from", str(src))
    assert code == 0, out
    assert "aiedit's own converter" in out and "verified: all checks passed" in out
    target = homes / "models" / "sa3-small"
    assert (target / "model_index.json").is_file() and not list(target.parent.glob(".converting-*"))
    assert json.loads((target / "aiedit_conversion.json").read_text())["diffusion_objective"] == "rf_denoiser"
    assert_same_model(tiny)
    code, out = run(capsys, "list")
    assert "present" in next(ln for ln in out.splitlines() if ln.startswith("sa3-small "))
    assert "needs google/t5gemma-b-b-ul2" in out and ": ok" in out


def test_conversion_refuses_a_variant_it_cannot_represent_and_leaves_nothing(tiny, homes, capsys, monkeypatch):
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    src = write_checkpoint(tiny, homes / "variant")
    state = reference_state_dict(tiny)
    state["model.model.timestep_features.weight"] = torch.randn(8, 1)  # learned Fourier time features
    save_file(state, str(src / "model.safetensors"))
    code, out = run(capsys, "pull", "sa3-small", "--from", str(src))
    assert code == 1 and "model.model.timestep_features.weight" in out and "no place for" in out
    assert not (homes / "models" / "sa3-small").exists()
    shapes = {k: tuple(v.shape) for k, v in reference_state_dict(tiny).items()}
    cfg = reference_config(tiny)
    cfg["model"]["diffusion"]["config"]["global_cond_type"] = "prepend"
    with pytest.raises(ConversionError, match="global_cond_type"):
        plan_conversion(cfg, shapes)
    base = plan_conversion(reference_config(tiny, objective="rectified_flow"), shapes)
    assert base.stochastic is False and plan_conversion(reference_config(tiny), shapes).stochastic is True
    missing = dict(shapes)
    del missing["conditioner.conditioners.seconds_total.embedder.embedding.1.weight"]
    with pytest.raises(ConversionError, match="duration"):
        plan_conversion(reference_config(tiny), missing)


def serve_sa3(tiny, tmp_path: Path) -> FakeHub:
    src = write_checkpoint(tiny, tmp_path / "hub-files", with_text_encoder=False)
    te = write_text_encoder(tiny, tmp_path / "hub-files-t5")
    return FakeHub({SA3_REPO: {p.name: p.read_bytes() for p in src.iterdir()},
                    T5: {p.name: p.read_bytes() for p in te.iterdir()}})


@pytest.fixture
def hub(tiny, homes, monkeypatch):
    from huggingface_hub import constants

    fake = serve_sa3(tiny, homes)
    monkeypatch.setenv("HF_ENDPOINT", fake.start())
    # conftest makes the hub client offline at import; these requests go to 127.0.0.1 only (HF_ENDPOINT above)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    yield fake
    fake.stop()


def test_pull_from_the_hub_survives_a_dropped_connection_and_never_shows_the_token(tiny, homes, hub, capsys):
    ckpt = hub.repos[SA3_REPO]["model.safetensors"]
    half = len(ckpt) // 2
    hub.drop_at[(SA3_REPO, "model.safetensors")] = half
    code, out = run(capsys, "pull", "sa3-small")
    assert code == 0, out
    gets = hub.hits("GET", SA3_REPO, "model.safetensors")
    assert [g.range for g in gets] == [None, f"bytes={half}-"]  # resumed where the connection dropped
    assert sum(g.sent for g in gets) == len(ckpt)  # no byte fetched twice
    assert "model.safetensors: 100% of" in out and "verified: all checks passed" in out
    assert "skipping laion/clap-htsat-unfused (optional)" in out  # not on this hub: the pull goes on without it
    assert all(h.auth == f"Bearer {SECRET}" for h in hub.log if h.repo in (SA3_REPO, T5))  # same origin: sent
    assert SECRET not in out
    for f in homes.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f
    assert_same_model(tiny)


def test_an_interrupted_pull_resumes_in_the_next_run_without_fetching_again(tiny, homes, hub, capsys, monkeypatch):
    monkeypatch.setattr(download, "TRIES", 2)
    ckpt = hub.repos[SA3_REPO]["model.safetensors"]
    third = len(ckpt) // 3
    hub.drop_at[(SA3_REPO, "model.safetensors")] = third
    hub.fail_after_drop.add((SA3_REPO, "model.safetensors"))  # then the server keeps failing: the run gives up
    code, out = run(capsys, "pull", "sa3-small")
    assert code == 1 and "run the same command again — it resumes" in out and "HTTP 503" in out
    partial = list((homes / "hf" / "hub").rglob("*.part"))
    assert len(partial) == 1 and partial[0].stat().st_size == third
    assert not (homes / "models" / "sa3-small").exists()
    hub.broken.clear()
    before = len(hub.log)
    code, out = run(capsys, "pull", "sa3-small")
    assert code == 0, out
    again = [h for h in hub.log[before:] if h.method == "GET" and h.path == "model.safetensors" and h.repo == SA3_REPO]
    assert [(h.range, h.sent) for h in again] == [(f"bytes={third}-", len(ckpt) - third)]  # only the missing bytes
    for repo, files in hub.repos.items():  # over both runs, every byte of every file was sent once
        for path, data in files.items():
            assert sum(h.sent for h in hub.hits("GET", repo, path)) == len(data), (repo, path)
    assert f"model.safetensors: resuming at {download.human(third)}" in out
    assert_same_model(tiny)


def test_a_full_disk_is_refused_before_the_download_starts(tiny, homes, hub, capsys, monkeypatch):
    monkeypatch.setattr(download, "free_bytes", lambda path: 10_000_000)  # 10 MB free: less than the spare kept
    code, out = run(capsys, "pull", "sa3-small")
    assert code == 1 and "not enough free space" in out and "10.0 MB free" in out
    assert not [h for h in hub.log if h.path != "<info>"]  # listed, nothing fetched
    assert not list((homes / "hf").rglob("*.safetensors")) and not (homes / "models").exists()
    total = sum(len(b) for files in hub.repos.values() for b in files.values())
    monkeypatch.setattr(download, "free_bytes", lambda path: download.MARGIN + 2 * total + 1)
    code, out = run(capsys, "pull", "sa3-small")
    assert code == 0, out


def test_the_tiny_reference_checkpoint_has_the_published_layout(tiny):
    """A few anchors of Stability's layout, so the fixture cannot drift into the converter's own naming."""
    sd = reference_state_dict(tiny)
    assert "pretransform.model.encoder.layers.0.transformers.0.self_attn.to_qkv.weight" in sd
    assert "pretransform.model.encoder.layers.2.weight" in sd  # [TRB, Transpose, Linear, Transpose]
    assert "pretransform.model.decoder.layers.3.new_tokens" in sd  # [Transpose, Linear, Transpose, TRB]
    assert "model.model.transformer.layers.1.ff.ff.0.proj.weight" in sd
    assert sd["model.model.transformer.rotary_pos_emb.inv_freq"].numel() == max(64 // 2, 32) // 2
    assert math.prod(sd["pretransform.model.bottleneck.noise_scaling_factor"].shape) == 0
