"""The real-size benchmark: its configs build models of the published sizes, and its CPU smoke mode runs."""

from __future__ import annotations

import json

import pytest

from benchmarks import gpu


def test_tango_unet_has_the_published_parameter_count():
    assert round(gpu.count_unet_params("tango") / 1e6, 1) == 865.9


@pytest.mark.parametrize("family", gpu.FAMILIES)
def test_real_size_models_match_published_sizes(family):
    """Built on the meta device (no memory): the whole adapter with every component at its real size."""
    model = gpu.build_real(family, "meta")
    counts = gpu.param_counts(model)
    assert gpu.denoiser_as_published(model) == pytest.approx(gpu.PUBLISHED_UNET_M[family], rel=0.03)
    if family in gpu.PUBLISHED_TOTAL_M:
        assert sum(counts.values()) == pytest.approx(gpu.PUBLISHED_TOTAL_M[family], rel=0.03)
    if family in gpu.PUBLISHED_VAE_M:
        assert counts["vae"] == pytest.approx(gpu.PUBLISHED_VAE_M[family], rel=0.01)


@pytest.mark.parametrize("family", gpu.SA3_FAMILIES)
def test_sa3_real_size_is_the_published_architecture(family):
    """SA3's DiT to 1 % of the published size once its inpainting embedders are set aside (which the publisher
    leaves out), the SAME codec ↓4096 to 256-d stereo latents, and T5Gemma-b's ≈ 0.3 B encoder."""
    model = gpu.build_real(family, "meta")
    assert gpu.denoiser_as_published(model) == pytest.approx(gpu.PUBLISHED_UNET_M[family], rel=0.01)
    assert model.downsampling == 4096 and model.vae.config.latent_dim == 256 and model.channels == 2
    assert model.sample_rate == 44100
    assert gpu.param_counts(model)["text_encoder"] == pytest.approx(281.6, rel=0.01)
    assert model.unet.config.use_differential_attention is (family == "sa3-medium")


def test_smoke_run_writes_every_row(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert gpu.main(["--model", "tango", "--smoke", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    whats = [r["what"] for r in data["rows"]]
    assert whats[:4] == ["stage 1 step", "stage 2 LoRA step", "stage 2 LoRA step, 4 noise draws", "stage 2 full step"]
    assert any(w.startswith("cold LoRA edit") for w in whats) and any(w.startswith("cold full") for w in whats)
    by = {r["what"]: r for r in data["rows"]}
    assert by["cached re-take, 2 η"]["cache_hit"] is True
    assert "finetune" in by["cold LoRA edit, 5 η"]["split"] and "finetune" not in by["cached re-take, 2 η"]["split"]
    assert all(r["peak_rss_mib"] > 0 for r in data["rows"])
    assert all(r["ms_per_step"] >= 0 for r in data["rows"][:5])  # a number; no timing asserted
    assert by["cold LoRA edit, 5 η"]["network_calls"] == {"embedding": 2, "finetune": 2, "sampling": 3}
    assert by["cached re-take, 2 η"]["network_calls"] == {"sampling": 3}
    assert by["SDEdit preview, 2 strengths"]["network_calls"]["sampling"] <= 3  # both strengths in one loop
    printed = capsys.readouterr().out
    assert "| stage 1 step" in printed and "embedding 2 + finetune 2 + sampling 3 = 7" in printed


def test_sa3_smoke_counts_sequential_network_calls(tmp_path):
    """The CPU smoke of the SA3 rows: FlowEdit and SDEdit previews and a LoRA edit through the real adapter, each
    with the denoiser calls it made one after another (FlowEdit batches its strengths and draws into one call a
    step, so its count is the step count; the three-stage edit adds one call per optimisation step)."""
    out = tmp_path / "bench.json"
    assert gpu.main(["--model", "sa3-small", "--smoke", "--rows", "lora,sdedit,flowedit", "--json", str(out)]) == 0
    by = {r["what"]: r for r in json.loads(out.read_text())["rows"]}
    lora, sdedit = by["cold LoRA edit, 5 η"], by["SDEdit preview, 2 strengths"]
    flow = by["FlowEdit preview, 2 strengths"]
    steps = 3  # --smoke sampling steps
    calls = {k: sum(r["network_calls"].values()) for k, r in (("lora", lora), ("sdedit", sdedit), ("flow", flow))}
    from diffusers import FlowMatchEulerDiscreteScheduler

    from engine.schedules import FlowSchedule

    # FlowEdit runs from the earliest start (strength = start σ, here 0.9) down, one call a step
    schedule = FlowSchedule(FlowMatchEulerDiscreteScheduler(num_train_timesteps=1))
    assert calls["flow"] == steps - schedule.start_step(0.9, schedule.grid(steps))
    assert 0 < calls["sdedit"] <= 2 * steps
    assert calls["lora"] >= 2 + 2 + steps  # smoke: 2 embedding + 2 fine-tuning steps, then sampling
    assert calls["lora"] > calls["flow"]


def test_rows_can_be_chosen(tmp_path):
    out = tmp_path / "bench.json"
    gpu.main(["--model", "audioldm2", "--smoke", "--rows", "sdedit", "--json", str(out)])
    assert [r["what"] for r in json.loads(out.read_text())["rows"]] == ["SDEdit preview, 2 strengths"]


def test_smoke_runs_the_bf16_path_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    gpu.main(["--model", "audioldm", "--smoke", "--precision", "bf16", "--rows", "lora,full", "--json", str(out)])
    data = json.loads(out.read_text())
    assert data["precision"] == "bf16 (bfloat16 weights)" and len(data["rows"]) == 2


def test_ace_step_real_size_is_the_published_turbo():
    """The 2B turbo DiT checkpoint (DiT, condition encoder, 5 Hz audio tokenizers) to 3 % of its published ≈ 4.7 GB
    of bf16, the Oobleck VAE to 1 % of its file (168.7 M in bf16: ↓1920 to 25 Hz, 64-d latents of 48 kHz stereo),
    Qwen3-Embedding-0.6B's 0.6 B."""
    model = gpu.build_real("ace-step", "meta")
    counts = gpu.param_counts(model)
    assert gpu.denoiser_as_published(model) == pytest.approx(2350.0, rel=0.03)
    assert counts["unet"] == pytest.approx(1575.5, rel=0.001) and counts["vae"] == pytest.approx(168.7, rel=0.01)
    assert counts["text_encoder"] == pytest.approx(596.0, rel=0.01)
    assert model.downsampling == 1920 and model.latent_dim == 64 and model.sample_rate == 48000
    assert model.guidance_distilled and model.default_steps == 8


def test_ace_step_smoke_runs_its_own_rows(tmp_path):
    """The CPU smoke of the ACE-Step rows: repaint (each strength its own loop) and cover (the cover strength below 1
    adds the text-only branch: two DiT calls a step)."""
    out = tmp_path / "bench.json"
    rows = "lora,flowedit,repaint,cover"
    assert gpu.main(["--model", "ace-step", "--smoke", "--rows", rows, "--json", str(out)]) == 0
    by = {r["what"]: r for r in json.loads(out.read_text())["rows"]}
    steps = 3
    assert by["repaint, middle third, 2 strengths"]["network_calls"] == {"sampling": 2 * steps}
    assert by["cover, 2 strengths"]["network_calls"] == {"sampling": 2 * steps}
    assert by["cold LoRA edit, 5 η"]["network_calls"] == {"embedding": 2, "finetune": 2, "sampling": steps}
    assert "FlowEdit preview, 2 strengths" in by
