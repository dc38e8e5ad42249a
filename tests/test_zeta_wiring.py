"""``mode: zeta`` and ``start: inversion`` through every entry point: protocol, CLI and the real daemon over UDP."""

from __future__ import annotations

import json

import pytest
import soundfile as sf
from bridge_helpers import Daemon, Listener, job, job_json, make_wav
from conftest import write_clip

from bridge.jobs.protocol import ProtocolError, parse_job
from bridge.workers.local import ProgressMap
from engine.cli import main
from engine.progress import Progress

SRC = "/abs/source.wav"


def test_protocol_maps_zeta_start_and_source_prompt():
    j = parse_job(job("z1", SRC, mode="zeta", etas=[0.3, 1.0], source_prompt="two knocks"))
    assert (j.params.mode, j.params.etas, j.params.source_prompt) == ("zeta", (0.3, 1.0), "two knocks")
    assert parse_job(job("z2", SRC, start="inversion")).params.start == "inversion"
    assert parse_job(job("z3", SRC)).params.start == "noise"


@pytest.mark.parametrize(("fields", "word"), [
    ({"mode": "zeta", "etas": [0.0]}, "ZETA strength of 0"),
    ({"mode": "zeta", "etas": [1.2]}, "outside"),
    ({"start": "latent"}, "start"),
    ({"start": 1}, "start"),
    ({"source_prompt": 5}, "source_prompt"),
])
def test_protocol_refuses_bad_zeta_fields(fields, word):
    with pytest.raises(ProtocolError, match=word):
        parse_job(job("z4", SRC, **fields))


def test_progress_counts_the_inversion_and_never_goes_back():
    p = parse_job(job("z5", SRC, mode="zeta", etas=[0.5], steps={"sample": 4})).params.with_(embed_steps=9,
                                                                                              tune_steps=9)
    pm = ProgressMap(p, loading=False)
    seen = [pm(Progress(s, i, 4))[1] for s in ("inverting", "sampling") for i in range(1, 5)]
    assert seen == sorted(seen) and seen[3] > seen[0] > 0.03  # no share wasted on stages zeta never runs


def test_cli_zeta_writes_one_take_per_strength(tmp_path, capsys):
    src = tmp_path / "k.wav"
    original = write_clip(src, seconds=1.0, sr=44100, channels=2)
    out = tmp_path / "takes"
    code = main([str(src), "--prompt", "a bell", "--mode", "zeta", "--eta", "0.4", "1.0", "--sample-steps", "4",
                 "--source-prompt", "a tone", "--out", str(out), "--cache", ""])
    assert code == 0, capsys.readouterr().err
    side = json.loads((out / "k_aiedit.json").read_text())
    assert side["params"]["mode"] == "zeta" and [t["eta"] for t in side["takes"]] == [0.4, 1.0]
    for t in side["takes"]:
        assert sf.read(t["path"], always_2d=True)[0].shape == original.shape


def test_daemon_runs_a_zeta_job_over_udp(tmp_path):
    src = make_wav(tmp_path / "src.wav", seconds=0.75, sr=44_100, channels=2)
    with Daemon(tmp_path / "spool") as d, Listener(d.port) as osc:
        osc.send("/aiedit/job", job_json("zj", src, mode="zeta", etas=[0.5, 1.0], steps={"sample": 4},
                                         source_prompt=""))
        address, args = osc.wait_end("zj", timeout=120)
        assert address == "/aiedit/done", args
        st = json.loads(args[1])
        assert st["mode"] == "zeta" and [t["eta"] for t in st["takes"]] == [0.5, 1.0]
        stages = [a[1] for addr, a in osc.events_for("zj") if addr == "/aiedit/progress"]
        assert "inverting" in stages and "sampling" in stages and "embedding" not in stages
        fr = [a[2] for addr, a in osc.events_for("zj") if addr == "/aiedit/progress"]
        assert fr == sorted(fr)
        for t in st["takes"]:
            data, rate = sf.read(t["path"], always_2d=True)
            assert (rate, data.shape) == (44_100, (33_075, 2))
