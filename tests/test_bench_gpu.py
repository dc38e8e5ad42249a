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
    counts = gpu.param_counts(gpu.build_real(family, "meta"))
    assert counts["unet"] == pytest.approx(gpu.PUBLISHED_UNET_M[family], rel=0.03)
    if family in gpu.PUBLISHED_TOTAL_M:
        assert sum(counts.values()) == pytest.approx(gpu.PUBLISHED_TOTAL_M[family], rel=0.03)


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


def test_rows_can_be_chosen(tmp_path):
    out = tmp_path / "bench.json"
    gpu.main(["--model", "audioldm2", "--smoke", "--rows", "sdedit", "--json", str(out)])
    assert [r["what"] for r in json.loads(out.read_text())["rows"]] == ["SDEdit preview, 2 strengths"]


def test_smoke_runs_the_bf16_path_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    gpu.main(["--model", "audioldm", "--smoke", "--precision", "bf16", "--rows", "lora,full", "--json", str(out)])
    data = json.loads(out.read_text())
    assert data["precision"] == "bf16 (bfloat16 weights)" and len(data["rows"]) == 2
