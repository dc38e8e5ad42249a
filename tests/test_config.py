"""``~/.aiedit/config.toml``: its keys are option names and become defaults; flags win; bad files fail clearly."""

from __future__ import annotations

import argparse

import pytest

from bridge.commands.cli import main as aiedit_main
from bridge.commands.parser import build_parser as aiedit_parser
from engine.cli import build_parser as edit_parser
from engine.config import ConfigError, apply_config, unknown_keys


@pytest.fixture
def config(tmp_path, monkeypatch):
    path = tmp_path / "config.toml"
    monkeypatch.setenv("AIEDIT_CONFIG", str(path))
    monkeypatch.delenv("AIEDIT_SPOOL", raising=False)

    def write(text: str):
        path.write_text(text)
        return path
    return write


def test_serve_takes_its_defaults_from_the_file_and_flags_win(config, tmp_path):
    config(f'''
model = "toy"
device = "cpu"
port = 9100
spool = "{tmp_path / 'sp'}"
token = "s3cret"

[serve]
port = 9200
preload = true
host = "127.0.0.2"
''')
    a = aiedit_parser().parse_args(["serve"])
    assert (a.model, a.device, a.port, a.spool, a.token, a.preload, a.host) == \
        ("toy", "cpu", 9200, str(tmp_path / "sp"), "s3cret", True, "127.0.0.2")
    a = aiedit_parser().parse_args(["serve", "--port", "9300", "--model", "tiny"])
    assert (a.port, a.model) == (9300, "tiny")
    # the client reads the same file: the top-level port, not [serve]'s
    assert aiedit_parser().parse_args(["send", "ping"]).port == 9100


def test_edit_reads_top_level_and_its_own_table(config):
    config('model = "toy"\ndevice = "cpu"\nport = 9100\n[edit]\neta = [0.5, 1.0]\nmode = "sdedit"\nseed = 3\n')
    a = edit_parser().parse_args(["in.wav", "--prompt", "p"])
    assert (a.model, a.device, a.eta, a.mode, a.seed) == ("toy", "cpu", [0.5, 1.0], "sdedit", 3)
    assert edit_parser().parse_args(["in.wav", "--prompt", "p", "--eta", "0.3"]).eta == [0.3]


def test_an_option_added_later_is_configurable_without_touching_the_loader(config):
    path = config('max-seconds = 30\nprecision = "fp16"\n[serve]\nmax_channels = 2\n')
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-seconds", type=float, default=None)
    ap.add_argument("--max-channels", type=int, default=None)
    ap.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32")
    assert apply_config(ap, "serve", path=path) == {"max_seconds": 30.0, "precision": "fp16", "max_channels": 2}
    assert ap.parse_args([]).max_seconds == 30.0


@pytest.mark.parametrize(("text", "needle"), [
    ("port = \"abc\"", "port = 'abc'"),
    ("[serve]\nprot = 9000", "[serve] has no option 'prot'"),
    ("[serve]\npreload = \"yes\"", "expected true or false"),
    ("model = [\"a\", \"b\"]", "expected one value"),
    ("port = 9000\nport = 9001", "config file"),
])
def test_a_bad_file_fails_with_one_line_naming_the_key(config, capsys, text, needle):
    path = config(text)
    with pytest.raises(ConfigError, match="config file"):
        aiedit_parser()
    assert aiedit_main(["serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"aiedit: error: config file {path}") and needle in err and len(err.splitlines()) == 1


def test_the_spool_environment_variable_beats_the_file(config, monkeypatch, tmp_path):
    config(f'spool = "{tmp_path / "from-file"}"\n')
    assert aiedit_parser().parse_args(["serve"]).spool == str(tmp_path / "from-file")
    monkeypatch.setenv("AIEDIT_SPOOL", str(tmp_path / "from-env"))
    assert aiedit_parser().parse_args(["serve"]).spool is None  # the daemon then reads AIEDIT_SPOOL itself


def test_model_dirs_in_the_file_are_searched_by_auto(config, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("AIEDIT_MODEL_DIRS", raising=False)
    folder = tmp_path / "models" / "ldm"
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text('{"_class_name": "AudioLDMPipeline"}')
    config(f'model_dirs = ["{tmp_path / "models"}"]\n')
    from engine.models.inventory import resolve_auto

    assert resolve_auto() == (str(folder), None)


def test_unknown_top_level_keys_are_reported_for_doctor(config):
    from engine.config import load_config

    config('modle = "toy"\nmodel_dirs = []\n[serv]\nport = 1\n')
    assert unknown_keys(load_config(), {"edit": edit_parser()}) == ["modle", "[serv]"]
