"""``aiedit edit``: a good run writes takes + sidecar; every bad input gives one line, exit 2, no files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from conftest import write_clip

from engine.cli import main

FAST = ["--embed-steps", "3", "--tune-steps", "3", "--sample-steps", "3"]


def test_a_good_edit_writes_one_take_per_eta_and_a_sidecar(tmp_path, capsys):
    src = tmp_path / "door.wav"
    original = write_clip(src, seconds=1.5, sr=48000, channels=2)
    out = tmp_path / "takes"
    code = main([str(src), "--prompt", "knocking on a wooden door", "--eta", "0.25", "0.75", "--inpaint",
                 "0.4:0.9", "--out", str(out), "--cache", str(tmp_path / "cache"), "--seed", "7", "--model", "tiny",
                 *FAST])
    assert code == 0
    side = json.loads((out / "door_aiedit.json").read_text())
    assert [t["eta"] for t in side["takes"]] == [0.25, 0.75]
    assert side["best"] in (0, 1) and side["params"]["seed"] == 7
    assert side["network_calls"] == {"embedding": 3, "finetune": 3, "sampling": 3}
    for t in side["takes"]:
        data, sr = sf.read(t["path"], always_2d=True)
        assert sr == 48000 and data.shape == original.shape
        assert np.array_equal(data[: int(0.4 * sr)], original[: int(0.4 * sr)])
        assert set(t["scores"]) == {"text", "audio", "sum"}
    printed = capsys.readouterr().out
    assert "← best" in printed and str(out / "door_aiedit.json") in printed


def _bad_cases(tmp_path):
    good = tmp_path / "ok.wav"
    write_clip(good, seconds=1.0, sr=16000, channels=1)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros((0, 1)), 16000)
    g = str(good)
    return [
        ([str(tmp_path / "missing.wav"), "--prompt", "x"], "not found"),
        ([str(text), "--prompt", "x"], "cannot read notes.wav as audio"),
        ([str(empty), "--prompt", "x"], "holds no audio"),
        ([g, "--prompt", "x", "--start", "5"], "after the end of the file"),
        ([g, "--prompt", "x", "--start", "0.5", "--length", "2"], "runs past the end"),
        ([g, "--prompt", "x", "--inpaint", "0.2:3"], "outside the clip"),
        ([g, "--prompt", "x", "--inpaint", "0.5:0.5"], "inpaint range"),
        ([g, "--prompt", "x", "--inpaint", "half"], "START:END"),
        ([g, "--prompt", "x", "--eta", "2.0"], "outside [0, 1.5]"),
        ([g, "--prompt", "  "], "prompt is empty"),
        ([g, "--prompt", "x", "--tune-steps", "100000000"], "fine-tuning steps"),
        ([g, "--prompt", "x", "--model", "wavenet"], "unknown model"),
        ([g, "--prompt", "x", "--model", str(tmp_path / "nope")], "model folder not found"),
    ]


def test_every_bad_input_gives_one_line_and_writes_nothing(tmp_path, capsys):
    for argv, needle in _bad_cases(tmp_path):
        out = tmp_path / "out"
        code = main([*argv, "--out", str(out), "--cache", ""])
        err = capsys.readouterr().err.strip()
        assert code == 2, (argv, err)
        assert err.startswith("aiedit: error: ") and needle in err, (argv, err)
        assert len(err.splitlines()) == 1
        assert not out.exists()


@pytest.mark.parametrize("model", ["audioldm", "tango", "audioldm2", "cvssp/audioldm2-large"])
def test_a_real_model_that_is_not_downloaded_fails_fast_with_how_to_fix(tmp_path, capsys, monkeypatch, model):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    src = tmp_path / "ok.wav"
    write_clip(src, seconds=1.0, sr=16000, channels=1)
    code = main([str(src), "--prompt", "x", "--model", model, "--out", str(tmp_path / "o"), "--cache", ""])
    err = capsys.readouterr().err
    assert code == 2 and "not on this machine" in err and "--model /path/to/folder" in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("model", ["sa3-medium", "sa3-small", "stabilityai/stable-audio-3-medium"])
def test_stable_audio_3_not_converted_here_fails_fast_with_how_to_get_it(tmp_path, capsys, monkeypatch, model):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    src = tmp_path / "ok.wav"
    write_clip(src, seconds=1.0, sr=44100, channels=2)
    code = main([str(src), "--prompt", "x", "--model", model, "--out", str(tmp_path / "o"), "--cache", ""])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "gated" in err and "aiedit models pull" in err, err
    assert not (tmp_path / "o").exists()


def test_an_edit_with_every_path_under_spaces_and_non_ascii_names(tmp_path):
    """Input, output, stage cache and a model folder (the shipped toy model copied) all in folders named with spaces
    and non-ASCII characters, through the console entry point as a user runs it."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from engine.models.catalog import SHIPPED

    base = tmp_path / "Åsa Øre – 音 studio"
    model = base / "Modelle – Müller" / "toy kopie 1"
    shutil.copytree(SHIPPED["toy"][1], model)
    src = base / "Eingang ä" / "Tür knarrt 01.wav"
    src.parent.mkdir(parents=True)
    write_clip(src, seconds=1.0, sr=44100, channels=2)
    out = base / "Ausgabe 声"
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-m", "bridge", "edit", str(src), "--prompt", "a bell rings", "--eta", "0.5",
                           "--model", str(model), "--out", str(out), "--cache", str(base / "Zwischen ablage"), *FAST],
                          env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    side = json.loads((out / "Tür knarrt 01_aiedit.json").read_text(encoding="utf-8"))
    assert side["input"] == str(src) and side["model"] == "toy kopie 1"
    (take,) = side["takes"]
    assert Path(take["path"]).is_file() and Path(take["path"]).parent == out
    assert list((base / "Zwischen ablage").iterdir())  # the stage cache wrote there
