"""A memory limit per job (issue 26, item 2): the estimate (engine.memory, a pure function of the job's shape,
strengths, mode and model) and the daemon's refusal, before the job runs, in one line with the numbers. How close
the estimate comes to measured peaks is a benchmark (``python -m benchmarks.bench_memory``), not a test."""

from __future__ import annotations

import pytest
from bridge_helpers import Daemon, Listener, job_json, make_wav

from engine.memory import MODELS, JobShape, estimate_job_bytes, model_memory


def _mb(model: str, seconds: float = 30.0, takes: int = 4, mode: str = "lora", rate: int = 44100, channels: int = 2,
        device: str = "cpu") -> float:
    return estimate_job_bytes(JobShape(int(seconds * rate), channels, rate, takes, mode), model, device).mb


@pytest.mark.parametrize("model", ["toy", "toy-flow", "audioldm", "stable-audio-3"])
def test_the_estimate_grows_with_length_takes_and_channels_and_with_training(model):
    assert _mb(model, seconds=60) > _mb(model, seconds=30) > _mb(model, seconds=5)
    assert _mb(model, takes=8) > _mb(model, takes=4) > _mb(model, takes=1)
    assert _mb(model, channels=6) > _mb(model, channels=2)
    assert _mb(model, mode="full") > _mb(model, mode="lora") > _mb(model, mode="sdedit")
    assert _mb(model, device="cuda") < _mb(model, device="cpu")  # the stages' memory is the GPU's there
    # long clips are dominated by their audio: at least the takes themselves, in float32
    assert _mb(model, seconds=120, takes=8) > 120 * 44100 * 2 * 8 * 4 / 1e6


def test_every_family_has_a_row_and_an_unknown_model_is_costed_by_its_audio_only():
    from engine.models.catalog import ALIASES, BUILTIN, SHIPPED

    for family, _ in [*ALIASES.values(), *SHIPPED.values()]:
        assert family in MODELS
    assert all(name in MODELS for name in BUILTIN)
    assert model_memory("toy", "audioldm") is MODELS["toy"]
    unknown = model_memory("someone/else", None)
    assert unknown.train_mb == unknown.take_mb == unknown.fixed_mb == 0  # told by the worker that it cannot load
    assert unknown.sample_rate == max(m.sample_rate for m in MODELS.values())
    assert unknown.channels == max(m.channels for m in MODELS.values())


def test_a_job_over_the_memory_limit_is_refused_before_it_runs_with_the_numbers(tmp_path):
    small = make_wav(tmp_path / "small.wav", seconds=0.5)
    long = make_wav(tmp_path / "long.wav", seconds=60.0)
    with Daemon(tmp_path / "spool", "--max-job-mb", "250") as d, Listener(d.port) as osc:
        osc.send("/aiedit/job", job_json("big", long, etas=[0.2, 0.4, 0.6, 0.8]))
        address, args = osc.wait_end("big", timeout=30)
        assert address == "/aiedit/error"
        msg = args[1]
        assert msg.startswith("the edit would need about ") and msg.endswith(
            "MB of memory (60.0 s x 2 ch at 44100 Hz, 4 takes, mode lora); at most 250 MB (aiedit serve --max-job-mb)")
        need = float(msg.split("about ")[1].split(" MB")[0])
        assert need == pytest.approx(_mb("tiny", seconds=60, takes=4), abs=1)
        st = d.status("big")
        assert st["state"] == "failed" and st["error"] == msg and st["takes"] == []
        osc.send("/aiedit/job", job_json("fits", small, etas=[0.5]))  # a job that fits still runs
        address, args = osc.wait_end("fits", timeout=120)
        assert address == "/aiedit/done", args
