"""``aiedit doctor``: passes on a healthy setup, and names the failing check and its fix when the spool cannot be
written, when another process holds the spool, when the port is taken, or when REAPER points elsewhere."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from bridge_helpers import Daemon

from bridge.commands.doctor import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("AIEDIT_CONFIG", str(tmp_path / "config.toml"))
    for var in ("HF_HUB_CACHE", "AIEDIT_MODEL_DIRS", "AIEDIT_SPOOL"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def reaper_resource(tmp_path: Path, spool: Path, with_scripts: bool = True) -> Path:
    res = tmp_path / "REAPER"
    (res / "Scripts").mkdir(parents=True)
    if with_scripts:
        shutil.copytree(ROOT / "reaper_scripts", res / "Scripts" / "aiedit")
    (res / "reaper-extstate.ini").write_text(f"[other]\nx=1\n\n[aiedit]\nspool={spool}\nlast_prompt=knocks\n")
    return res


def doctor(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def row(out: str, name: str) -> str:
    lines = out.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln[5:].startswith(name + " "))
    fix = lines[i + 1] if i + 1 < len(lines) and lines[i + 1].strip().startswith("fix:") else ""
    return lines[i] + "\n" + fix


def test_doctor_passes_on_this_machine(env, capsys):
    spool = env / "spool"
    code, out = doctor(capsys, "--spool", str(spool), "--port", "0", "--reaper-resource",
                       str(reaper_resource(env, spool)))
    assert code == 0, out
    assert out.split("\nnext step to a first real edit:")[0].rstrip().endswith("all checks passed")
    for name in ("torch", "model", "verify toy", "spool", "spool lock", "port", "reaper scripts", "reaper spool"):
        assert row(out, name).split()[0] in ("ok", "warn"), (name, out)
    assert "auto → toy" in out


def test_a_spool_that_cannot_be_written_fails_with_the_fix(env, capsys):
    blocker = env / "a-file"
    blocker.write_text("not a folder")  # even root cannot create a folder under a regular file
    code, out = doctor(capsys, "--spool", str(blocker / "spool"), "--port", "0")
    assert code == 1
    line = row(out, "spool")
    assert line.startswith("FAIL") and "not writable" in line and "--spool DIR" in line
    assert "FAILED: spool" in out


HOLDER = """
import fcntl, json, os, socket, sys, time
spool = sys.argv[1]
os.makedirs(spool, exist_ok=True)
lock = open(os.path.join(spool, "daemon.lock"), "w")
fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))  # a port that never answers
while True:
    info = {"pid": os.getpid(), "host": "127.0.0.1", "port": sock.getsockname()[1], "heartbeat": time.time()}
    tmp = os.path.join(spool, ".daemon.json.tmp")
    with open(tmp, "w") as fh:
        json.dump(info, fh)
    os.replace(tmp, os.path.join(spool, "daemon.json"))
    print("held", flush=True)
    time.sleep(1)
"""


def test_a_stuck_process_holding_the_spool_is_named_with_its_pid(env, capsys):
    spool = env / "spool"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(spool)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        code, out = doctor(capsys, "--spool", str(spool), "--port", "0")
    finally:
        proc.kill()
        proc.wait()
    assert code == 1
    line = row(out, "spool lock")
    assert line.startswith("FAIL") and f"pid {proc.pid}" in line and f"kill {proc.pid}" in line, out


def test_a_live_daemon_on_the_spool_is_fine_and_owns_its_port(env, capsys):
    spool = env / "spool"
    with Daemon(spool) as d:
        code, out = doctor(capsys, "--spool", str(spool), "--port", str(d.port))
    assert code == 0, out
    assert row(out, "spool lock").startswith("ok") and "answering" in row(out, "spool lock")
    assert row(out, "port").startswith("ok")


def test_a_port_in_use_by_another_program_fails_with_the_fix(env, capsys):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        code, out = doctor(capsys, "--spool", str(env / "spool"), "--port", str(port))
    assert code == 1
    line = row(out, "port")
    assert line.startswith("FAIL") and "in use by another program" in line and "--port N" in line


def test_reaper_pointing_at_another_spool_or_missing_scripts_fails(env, capsys):
    spool = env / "spool"
    res = reaper_resource(env, env / "elsewhere", with_scripts=False)
    code, out = doctor(capsys, "--spool", str(spool), "--port", "0", "--reaper-resource", str(res))
    assert code == 1
    line = row(out, "reaper spool")
    assert line.startswith("FAIL") and str(env / "elsewhere") in line and f"--spool {env / 'elsewhere'}" in line
    assert row(out, "reaper scripts").startswith("FAIL")


def test_a_missing_model_and_a_config_value_reach_the_doctor(env, capsys):
    (env / "config.toml").write_text('model = "tango"\n[doctor]\nport = 0\n')
    code, out = doctor(capsys, "--spool", str(env / "spool"))
    assert code == 1
    line = row(out, "model")
    assert line.startswith("FAIL") and "aiedit models pull tango" in line
    assert row(out, "port").startswith("ok") and "any free port" in row(out, "port")


def test_the_console_script_dispatches_doctor(env):
    spool = env / "spool"
    proc = subprocess.run([sys.executable, "-m", "bridge", "doctor", "--spool", str(spool), "--port", "0"],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
                          cwd=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all checks passed" in proc.stdout


def test_a_bad_value_for_another_command_fails_the_config_check(env, capsys):
    (env / "config.toml").write_text('[serve]\nport = "nine"\n')
    code, out = doctor(capsys, "--spool", str(env / "spool"), "--port", "0")
    assert code == 1
    line = row(out, "config")
    assert line.startswith("FAIL") and "port = 'nine'" in line and "fix that key" in line


def test_reaper_engine_command_is_a_full_path_and_can_be_written(env, capsys):
    # issue 18: "Yes: start it now" runs the command through ExecProcess, which does not search PATH (and a macOS
    # app has no shell PATH): doctor names the full command and can write it into the scripts' settings
    spool = env / "spool"
    res = reaper_resource(env, spool, with_scripts=False)
    _, out = doctor(capsys, "--spool", str(spool), "--port", "0", "--reaper-resource", str(res))
    line = row(out, "reaper engine")
    assert line.startswith("warn") and "`aiedit serve`" in line and "not a full path" in line
    from bridge.commands.doctor import engine_command

    cmd = engine_command()
    assert cmd in line and Path(cmd.strip('"').split('"')[0].split(" ")[0]).is_absolute()
    _, out = doctor(capsys, "--spool", str(spool), "--port", "0", "--reaper-resource", str(res),
                    "--write-reaper-settings")
    ini = (res / "reaper-extstate.ini").read_text()
    assert f"engine_cmd={cmd}\n" in ini and "[other]\nx=1\n" in ini and "last_prompt=knocks" in ini
    assert row(out, "reaper engine").startswith("ok")


def test_an_engine_command_naming_the_moved_cli_module_is_flagged():
    # an older doctor wrote `python -m bridge.cli serve` where no aiedit script was found; that module moved
    from bridge.commands.doctor import check_engine_cmd

    old = check_engine_cmd({"engine_cmd": f"{sys.executable} -m bridge.cli serve"})
    assert old.level == "warn" and "bridge.cli no longer exists" in old.detail and "--write-reaper-settings" in old.fix
    now = check_engine_cmd({"engine_cmd": f"{sys.executable} -m bridge serve"})
    assert now.level == "ok"
    proc = subprocess.run([sys.executable, "-m", "bridge", "serve", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--max-queued" in proc.stdout  # what doctor writes now still starts the engine


def test_a_token_file_readable_by_others_fails_and_a_private_one_is_used(env, capsys, monkeypatch):
    spool = env / "spool"
    tf = env / "token"
    tf.write_text("s3cret\n")
    tf.chmod(0o644)
    code, out = doctor(capsys, "--spool", str(spool), "--port", "0", "--token-file", str(tf))
    assert code == 1 and row(out, "token").startswith("FAIL") and "chmod 600" in row(out, "token")
    tf.chmod(0o600)
    res = reaper_resource(env, spool)
    code, out = doctor(capsys, "--spool", str(spool), "--port", "0", "--token-file", str(tf),
                       "--reaper-resource", str(res))
    assert "FAIL token" not in out and row(out, "reaper token").startswith("FAIL")  # the file's token is compared
    monkeypatch.setenv("AIEDIT_TOKEN", "s3cret")
    (res / "reaper-extstate.ini").write_text(f"[aiedit]\nspool={spool}\ntoken=s3cret\n")
    code, out = doctor(capsys, "--spool", str(spool), "--port", "0", "--reaper-resource", str(res))
    assert "reaper token" not in out or row(out, "reaper token").startswith("ok"), out


def test_free_gpu_memory_is_checked_for_each_stable_audio_3_size():
    from bridge.commands.doctor import sa3_fit

    both = sa3_fit(0, 40.0)
    assert both.level == "ok" and "sa3-small" in both.detail and "sa3-medium" in both.detail
    small = sa3_fit(0, 6.0)
    assert small.level == "warn" and "fits sa3-small" in small.detail and "sa3-medium needs" in small.detail
    none = sa3_fit(1, 1.0)
    assert none.level == "FAIL" and none.name == "gpu 1 sa3" and "sa3-small needs" in none.detail


def test_free_gpu_memory_is_checked_for_ace_step_and_every_random_weight_model_is_flagged(env, capsys):
    from bridge.commands.doctor import ace_fit, check_model

    fits, short = ace_fit(0, 24.0), ace_fit(1, 8.0)
    assert fits.level == "ok" and fits.name == "gpu 0 ace-step" and "fits" in fits.detail
    assert short.level == "warn" and "needs ≈10 GiB" in short.detail and short.fix
    for name in ("tiny", "tiny-sa3", "tiny-ace"):
        (r,) = check_model(name)
        assert r.level == "warn" and r.detail == f"{name} has random weights: edits come back as noise"
    (auto, *_) = check_model("auto")  # nothing on disk here (env): the shipped toy model, and the families named
    assert auto.level == "warn" and "(Stable Audio 3, ACE-Step, TANGO, AudioLDM 2, AudioLDM)" in auto.detail


def test_an_apple_gpu_is_reported_and_mps_where_there_is_none_fails_in_one_line(monkeypatch):
    from bridge.commands.doctor import check_torch
    from engine import devices

    monkeypatch.setattr(devices, "mps_available", lambda: True)
    monkeypatch.setenv(devices.FALLBACK_ENV, "1")
    rows = {r.name: r for r in check_torch(None)}
    assert rows["mps"].level == "ok" and "Apple GPU" in rows["mps"].detail and "fp32" in rows["mps"].detail
    assert "cuda" not in rows  # an Apple GPU does the work: no CUDA warning
    monkeypatch.setenv(devices.FALLBACK_ENV, "0")
    assert {r.name: r for r in check_torch("mps")}["mps"].level == "warn"
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    monkeypatch.setattr(devices, "mps_built", lambda: False)
    bad = {r.name: r for r in check_torch("mps")}["mps"]
    assert bad.level == "FAIL" and "\n" not in bad.detail and "built without it" in bad.detail
    assert "mps" not in {r.name for r in check_torch(None)}  # nothing said about an Apple GPU elsewhere


def test_doctor_ends_with_the_next_step_to_a_first_real_edit(env, capsys, monkeypatch):
    from engine import devices
    from engine.models import fit

    # a CPU machine with 8 GiB of RAM, whatever this one has: too small for ACE-Step (≈10 GiB), so SA3 small music
    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    monkeypatch.setattr(fit, "ram_gib", lambda: 8.0)
    _, out = doctor(capsys, "--spool", str(env / "spool"), "--port", "0", "--model", "toy",
                    "--reaper-resource", str(env / "no-reaper"))
    tail = out.split("next step to a first real edit:", 1)[1]
    assert "music: sa3-small-music (needs ≈4 GiB; 8.0 GiB of RAM" in tail and "sound effects: sa3-small" in tail
    assert "`aiedit models pull sa3-small`" in tail and "`aiedit selftest --model sa3-small`" in tail


def test_serve_on_an_absent_device_stops_in_one_line(tmp_path):
    import torch

    if torch.backends.mps.is_available():
        pytest.skip("this machine has an Apple GPU")
    r = subprocess.run([sys.executable, "-m", "bridge", "serve", "--device", "mps", "--spool", str(tmp_path / "s"),
                        "--port", "0", "--model", "tiny"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--device mps: no Apple GPU" in r.stderr


def test_the_doctor_predicts_the_scripts_default_spool_on_windows_whatever_the_user_name(monkeypatch):
    from bridge.commands.doctor import scripts_default_spool

    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("USERPROFILE", "C:\\Users\\王小明")
    usual = "C:\\Users\\王小明\\AppData\\Roaming\\REAPER"
    assert str(scripts_default_spool(Path(usual))) == "C:\\Users\\王小明\\.aiedit\\spool"  # same as the daemon
    portable = "D:\\REAPER portable"  # the scripts cannot know the profile: their spool is under REAPER's folder
    assert str(scripts_default_spool(Path(portable))) == "D:\\REAPER portable\\aiedit\\spool"
    monkeypatch.setenv("USERPROFILE", "C:\\Users\\jo")
    assert str(scripts_default_spool(Path(portable))) == "C:\\Users\\jo\\.aiedit\\spool"
