"""The stage cache the local workers of one daemon share (issue 26, findings 6 and 15), against a real daemon:
a temporary folder that cannot take an entry costs the cache, never the job; a daemon killed with SIGKILL leaves
its private cache folder behind, and the next start removes it (but never a live daemon's)."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

from bridge_helpers import Daemon, Listener, job_json, make_wav

PREFIX = "aiedit-stage-cache-"


def _private(tmp: Path) -> list[Path]:
    return sorted(tmp.glob(f"{PREFIX}*"))


def _wait_private(tmp: Path, n: int, timeout: float = 20.0) -> list[Path]:
    deadline = time.monotonic() + timeout
    while len(found := _private(tmp)) != n:
        assert time.monotonic() < deadline, found
        time.sleep(0.05)
    return found


def _small_files() -> None:
    """In the daemon's process: no file may grow past 120 KB. Its takes (0.25 s of stereo float) fit; a LoRA
    stage cache entry of the tiny model (~140 KB) does not: writing it fails as it would on a full disk."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (120_000, 120_000))


def test_a_lora_job_runs_without_the_stage_cache_when_the_cache_cannot_be_written(tmp_path):
    """Finding 6: with several workers and a full temporary folder every LoRA job failed ("internal error")."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    src = make_wav(tmp_path / "src.wav", seconds=0.25)
    with Daemon(tmp_path / "spool", "--devices", "cpu,cpu", env={"TMPDIR": str(tmp)}, preexec=_small_files) as d:
        [folder] = _wait_private(tmp, 1)
        with Listener(d.port) as osc:
            osc.send("/aiedit/job", job_json("full1", src, etas=[0.5]))
            address, args = osc.wait_end("full1", timeout=180)
        assert address == "/aiedit/done", (args, d.stderr()[-3000:])
        st = d.status("full1")
        assert st["state"] == "done" and len(st["takes"]) == 1
        assert not list(folder.glob("*.safetensors")) and not list(folder.glob(".*.partial"))
        assert "stage cache: cannot store" in d.stderr()


def test_a_killed_daemons_private_cache_folder_is_removed_at_the_next_start_but_a_live_ones_is_kept(tmp_path):
    """Finding 15: each kill -9 left its private stage cache folder behind for ever."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp)}
    with Daemon(tmp_path / "other", "--devices", "cpu,cpu", env=env) as live:
        [kept] = _wait_private(tmp, 1)
        d = Daemon(tmp_path / "spool", "--devices", "cpu,cpu", env=env)
        [left] = [p for p in _wait_private(tmp, 2) if p != kept]
        (left / "entry.safetensors").write_bytes(b"x" * 1000)
        d.kill()
        assert left.is_dir()
        past = time.time() - 3600  # both made an hour ago (a folder seconds old may be a starting daemon's)
        for p in (kept, left):
            os.utime(p, (past, past))
        d.start()
        folders = _wait_private(tmp, 2)
        assert kept in folders and left not in folders, folders
        assert live.alive()
        d.stop()
        assert _private(tmp) == [kept]  # a clean stop removes its own
