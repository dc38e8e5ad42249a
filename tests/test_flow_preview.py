"""Issue 25, item 6: FlowEdit as a preview a CPU can afford. Without CUDA a FlowEdit take costs about what an SDEdit
take does in DiT rows (1 noise draw, a grid on which the strongest take runs CPU_CALLS steps, every strength and
branch in one call a step); on CUDA the paper's 28 steps and 2 draws stay. Counted with a hook on the DiT: its rows
are what a CPU pays for (docs/performance.md has the wall-clock ratio on real-size SA3 small)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from engine.editor import Editor
from engine.flowedit import CPU_CALLS, DEFAULT_STEPS, NOISE_DRAWS, default_draws
from engine.models.stable_audio3 import tiny_stable_audio3
from engine.params import EditParams, EditRequest


@pytest.fixture(scope="module")
def editor():
    return Editor(tiny_stable_audio3(seed=0))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("preview") / "clip.wav"
    t = np.arange(int(0.5 * 44100)) / 44100
    sf.write(path, np.stack([0.3 * np.sin(2 * np.pi * 330 * t), 0.2 * np.sin(2 * np.pi * 495 * t)], 1), 44100)
    return str(path)


def _rows(editor: Editor, params: EditParams, path: str) -> tuple[list[int], dict]:
    batches: list[int] = []
    handle = editor.model.unet.register_forward_pre_hook(lambda mod, args: batches.append(args[0].shape[0]))
    try:
        res = editor.edit(EditRequest(path, params=params))
    finally:
        handle.remove()
    return batches, res


def test_one_flowedit_strength_costs_at_most_one_and_a_half_sdedit_takes_in_rows(editor, clip):
    for strength in (0.6, 0.9, 1.0):
        fe, res = _rows(editor, EditParams("a bell", mode="flowedit", etas=(strength,), seed=0), clip)
        sd, _ = _rows(editor, EditParams("a bell", mode="sdedit", etas=(strength,), seed=0), clip)
        assert len(fe) == CPU_CALLS == res.network_calls["sampling"]
        assert set(fe) == {2}  # one draw: the source row and the target row, in one call
        assert res.params["noise_draws"] == 1
        assert sum(fe) <= 1.5 * sum(sd), (strength, sum(fe), sum(sd))


def test_every_strength_and_branch_share_each_call(editor, clip):
    """Three strengths: still CPU_CALLS calls (the strongest take's), the others joining at their start step."""
    batches, res = _rows(editor, EditParams("a bell", mode="flowedit", etas=(0.5, 0.75, 0.9), seed=0), clip)
    assert len(batches) == CPU_CALLS and max(batches) == 1 + 3 and batches == sorted(batches)
    assert res.params["sample_steps"] < DEFAULT_STEPS


def test_the_paper_settings_are_kept_where_rows_are_cheap(editor, clip):
    """The CUDA choice, decided on the host; and on the CPU the 2-draw, 28-step run is still one flag away."""
    assert default_draws("cuda") == NOISE_DRAWS == 2 and default_draws("cpu") == default_draws("mps") == 1
    editor.flowedit_draws = 2
    try:
        batches, res = _rows(editor, EditParams("a bell", mode="flowedit", etas=(0.9,), seed=0,
                                                sample_steps=DEFAULT_STEPS), clip)
    finally:
        editor.flowedit_draws = None
    assert set(batches) == {4} and res.params["noise_draws"] == 2 and res.params["sample_steps"] == DEFAULT_STEPS
    assert len(batches) == DEFAULT_STEPS - editor.model.schedule.start_step(0.9, editor.model.schedule.grid(28))


def test_the_cpu_preview_benchmark_runs_its_rows(tmp_path):
    """``python -m benchmarks preview`` (real-size SA3 small in docs/performance.md), kept alive on the tiny model."""
    import json

    from benchmarks.bench_preview import main

    out = tmp_path / "preview.json"
    assert main(["--smoke", "--strengths", "0.7,1.0", "--json", str(out)]) == 0
    rows = {r["what"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["ours sdedit"]["ratio_to_sdedit"] == 1.0
    assert rows["ours flowedit (CPU preview)"]["network_calls"]["sampling"] == CPU_CALLS
    assert rows["ours flowedit (CPU preview)"]["noise_draws"] == 1
    assert rows[f"ours flowedit ({DEFAULT_STEPS} steps, {NOISE_DRAWS} draws)"]["noise_draws"] == NOISE_DRAWS
    assert "diffusers StableAudio3AudioToAudioPipeline" in rows and "ours sdedit @ 0.7/1" in rows


def test_flow_models_default_to_strengths_that_edit(tmp_path):
    """Issue 25: 0.25 / 0.5 / 0.75 are near-copies on Stable Audio 3; without --eta the CLI gives its zero-shot modes
    the measured flow defaults, and every other model and mode the old ones."""
    from engine.cli import build_parser, request_from_args
    from engine.models.catalog import FLOW_STRENGTHS

    src = tmp_path / "c.wav"
    sf.write(src, np.zeros(4410), 44100)

    def etas(*argv: str) -> tuple[float, ...]:
        return request_from_args(build_parser().parse_args([str(src), "--prompt", "a bell", *argv])).params.etas
    assert etas("--model", "tiny-sa3", "--mode", "flowedit") == FLOW_STRENGTHS["flowedit"] == (0.75, 0.85, 0.95)
    assert etas("--model", "tiny-sa3", "--mode", "sdedit") == FLOW_STRENGTHS["sdedit"]
    assert etas("--model", "tiny-sa3", "--mode", "lora") == etas("--model", "tiny", "--mode", "sdedit") == (
        0.25, 0.5, 0.75)
    assert etas("--model", "tiny-sa3", "--mode", "flowedit", "--eta", "0.3") == (0.3,)
