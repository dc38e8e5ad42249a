"""The edit reads exactly the frames and shape that were checked, from the descriptor that was checked (issue 26,
finding 7): the real Service and local Worker with the tiny model, in this process, so that the source's header can
be rewritten at the moment the engine starts, which no client can time from outside."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from bridge_helpers import job

from bridge.jobs.limits import Limits
from bridge.jobs.protocol import ReplyTo
from bridge.jobs.service import Service
from bridge.jobs.spool import Spool
from bridge.workers.loaded import LoadedModels
from bridge.workers.local import Worker

HEADER = 44  # RIFF + fmt (16 bytes) + data chunk header


def _header(rate: int, data_bytes: int, file_bytes: int) -> bytes:
    """A mono 32-bit float WAV header declaring ``data_bytes`` of samples at ``rate``."""
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    return (b"RIFF" + struct.pack("<I", file_bytes - 8) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", data_bytes))


def _two_faced_wav(path: Path, frames: int, factor: int) -> None:
    """A WAV that reads as ``frames`` frames at 1000 Hz, holding ``factor`` times as many samples behind a JUNK
    chunk: rewriting its header in place (:func:`_rewrite`) makes it ``factor * frames`` at ``factor`` kHz — the
    same seconds, ``factor`` times the samples."""
    rng = np.random.default_rng(0)
    samples = (0.3 * rng.standard_normal(frames * factor)).astype("<f4").tobytes()
    tail = len(samples) - frames * 4
    body = samples[:frames * 4] + b"JUNK" + struct.pack("<I", tail - 8) + samples[frames * 4 + 8:]
    path.write_bytes(_header(1000, frames * 4, HEADER + len(body)) + body)


def _rewrite(path: Path, frames: int, factor: int) -> None:
    size = path.stat().st_size
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, _header(1000 * factor, frames * factor * 4, size), 0)  # in place: same inode, same size
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def editor():
    import engine

    return engine.load_editor("tiny", device="cpu", scorer=None)


def test_a_header_rewritten_when_the_edit_starts_cannot_enlarge_the_edit(tmp_path, editor):
    """Finding 7: the worker checked the file, then the engine probed and opened it twice more; a header rewritten
    in place between the check and the read ran the edit on 48x the checked samples (refused only after it)."""
    frames, factor = 1000, 48
    src = tmp_path / "src.wav"
    _two_faced_wav(src, frames, factor)
    assert sf.info(str(src)).frames == frames and sf.info(str(src)).samplerate == 1000
    rewritten = []

    def send(to: ReplyTo, address: str, args: list) -> None:  # the service's events, on the worker's thread
        if address == "/aiedit/progress" and args[1] == "preparing" and not rewritten:
            _rewrite(src, frames, factor)  # the engine is about to read the region
            rewritten.append(True)

    spool = Spool(tmp_path / "spool")
    spool.create()
    # 1000 frames x 1 take fit 0.1 MB of takes; 48,000 frames do not
    service = Service(spool, model="tiny", send=send, limits=Limits(max_output_mb=0.1))
    worker = Worker(service, "tiny", device="cpu", max_models=1)
    worker.models = LoadedModels(lambda name: editor, limit=1)  # the module's model, already loaded
    body = job("twofaced", src, etas=[0.5], mode="sdedit")
    jid, err = service.submit(body, ReplyTo("127.0.0.1", 9))
    assert jid == "twofaced", err
    item = service.next_job(5.0, worker.slot.name)
    assert item is not None
    worker._run_job(*item)
    assert rewritten and sf.info(str(src)).frames == frames * factor  # the header did change under the job
    st = json.loads((spool.job_dir(jid) / "status.json").read_text())
    assert st["state"] == "done", st["error"]
    assert (st["sample_rate"], st["channels"], st["frames"]) == (1000, 1, frames)  # what was checked
    [take] = st["takes"]
    assert sf.info(take["path"]).frames == frames and sf.info(take["path"]).samplerate == 1000


def test_a_source_shortened_after_the_ack_fails_the_job_with_the_reason(tmp_path, editor):
    src = tmp_path / "src.wav"
    sf.write(str(src), np.zeros((8000, 2), dtype=np.float32), 8000, subtype="FLOAT")
    spool = Spool(tmp_path / "spool")
    spool.create()
    service = Service(spool, model="tiny", send=lambda *a: None)
    worker = Worker(service, "tiny", device="cpu", max_models=1)
    worker.models = LoadedModels(lambda name: editor, limit=1)  # the module's model, already loaded
    body = job("short", src, etas=[0.5], mode="sdedit")
    body["source"]["length"] = 1.0
    jid, err = service.submit(body, None)
    assert jid == "short", err
    os.truncate(src, 1000)  # the second asked for is no longer there
    worker._run_job(*service.next_job(5.0, worker.slot.name))
    st = json.loads((spool.job_dir(jid) / "status.json").read_text())
    assert st["state"] == "failed" and st["error"].startswith("the source changed after the job was accepted: ")
    assert st["takes"] == []
