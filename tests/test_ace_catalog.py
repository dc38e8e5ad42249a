"""ACE-Step in the model manager, without torch and offline: every model's kind, modes and musical-context fields
(what the daemon lists), the ACE-Step aliases in ``aiedit models list`` with their pull commands and licence, what
``pull`` fetches, fake hub-cache snapshots found, verified and ranked by ``--model auto``."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_model_auto import TANGO, fake_snapshot
from test_models_cli import hub as hub  # the fixture
from test_models_cli import line_of, run

from engine.models import catalog, inventory
from engine.models.registry import resolve
from engine.params import MUSIC_FIELDS

ROOT = Path(__file__).resolve().parent.parent
DIT_CONFIG = {"hidden_size": 16, "in_channels": 24, "audio_acoustic_hidden_dim": 8, "model_version": "turbo",
              "num_hidden_layers": 2}


def test_describe_gives_every_model_its_kind_modes_and_context_fields():
    kinds = {name: catalog.describe(name)["kind"] for name in (*catalog.ALIASES, *catalog.SHIPPED, *catalog.BUILTIN)}
    assert kinds["ace-step"] == kinds["ace-step-sft"] == kinds["ace-step-base"] == kinds["tiny-ace"] == "music"
    assert kinds["sa3-small"] == "sound effects" and kinds["sa3-small-music"] == "music"
    assert kinds["sa3-medium"] == "general" and kinds["audioldm2-music"] == "music"
    assert kinds["tango"] == "sound effects"
    assert set(kinds.values()) <= set(catalog.KINDS)
    ace = catalog.describe("ace-step")
    modes = ["lora", "full", "sdedit", "flowedit", "repaint", "cover"]
    assert ace == {"name": "ace-step", "kind": "music", "takes": list(MUSIC_FIELDS), "modes": modes,
                   "strengths": {m: [0.25, 0.5, 0.75] for m in modes}}  # ACE-Step: the general ones (not measured)
    assert catalog.describe("sa3-small")["modes"] == ["lora", "full", "sdedit", "flowedit"]
    assert catalog.describe("sa3-small")["strengths"]["flowedit"] == [0.75, 0.85, 0.95]
    assert catalog.describe("toy")["takes"] == [] and "zeta" in catalog.describe("toy")["modes"]
    assert catalog.describe("/models/my-song-model", family="ace-step")["kind"] == "music"


def test_describe_matches_the_loaded_models():
    from engine.models.registry import load_model

    for name in ("tiny-ace", "tiny-sa3", "tiny"):
        m = load_model(name)
        d = catalog.describe(name)
        assert tuple(d["modes"]) == m.modes and tuple(d["takes"]) == m.takes, name


def test_the_catalog_and_params_import_without_torch():
    code = ("import sys, engine.models.catalog as c, engine.params as p; c.describe('ace-step'); "
            "p.MusicContext(bpm=90).validate(); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_list_shows_the_ace_step_aliases_with_pull_command_and_licence(hub, capsys):
    code, out = run(capsys, "list")
    assert code == 0
    for name in ("ace-step", "ace-step-sft", "ace-step-base"):
        assert "missing" in line_of(out, name) and f"get it: aiedit models pull {name}" in out
    assert out.count("MIT (ungated)") == 3 and "ACE-Step/acestep-v15-sft" in line_of(out, "ace-step-sft")
    assert "tiny-ace" in out


def test_pull_fetches_the_dit_and_the_shared_parts_not_the_planner_lm():
    assert inventory.pull_plan("ace-step")[0] == ("ACE-Step/Ace-Step1.5",
                                                  ["acestep-v15-turbo/*", "vae/*", "Qwen3-Embedding-0.6B/*"])
    assert inventory.pull_plan("ace-step-sft")[:2] == [("ACE-Step/acestep-v15-sft", None),
                                                       ("ACE-Step/Ace-Step1.5", ["vae/*", "Qwen3-Embedding-0.6B/*"])]


def test_offline_pull_says_what_to_copy(hub, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out = run(capsys, "pull", "ace-step-sft")
    assert code == 1 and "models--ACE-Step--acestep-v15-sft" in out and "models--ACE-Step--Ace-Step1.5" in out
    assert "gated" not in out


def _ace_snapshot(hub: Path, repo: str, dit: str = "", shared: bool = True) -> Path:
    from safetensors.numpy import save_file

    pre = f"{dit}/" if dit else ""
    files = {f"{pre}config.json": json.dumps(DIT_CONFIG)}
    if shared:
        files.update({"vae/config.json": json.dumps({"_class_name": "AutoencoderOobleck"}),
                      "Qwen3-Embedding-0.6B/config.json": json.dumps({"architectures": ["Qwen3Model"]})})
    snap = fake_snapshot(hub, repo, files)
    if shared:
        for part in ("vae", "Qwen3-Embedding-0.6B"):
            save_file({"w": np.zeros(4, np.float32)}, str(snap / part / "model.safetensors"))
    save_file({"decoder.proj_in.1.weight": np.zeros((16, 24, 2), np.float32),
               "decoder.proj_out.1.weight": np.zeros((16, 8, 2), np.float32)}, str(snap / pre / "model.safetensors"))
    return snap


def test_pull_goes_through_the_resumable_fetcher_and_leaves_the_planner_lm(hub, capsys, monkeypatch, tmp_path):
    """``models pull ace-step`` fetches like every pull (engine/models/download.py, issue 27): from a hub stand-in
    on 127.0.0.1, only the turbo DiT and the shared parts (pull_plan's patterns), a dropped connection resumed where
    it stopped, then verified."""
    import torch
    from fake_hub import FakeHub
    from huggingface_hub import constants

    repo, dit = "ACE-Step/Ace-Step1.5", "acestep-v15-turbo/model.safetensors"
    lm = "acestep-5Hz-lm-1.7B/model.safetensors"
    src = _ace_snapshot(tmp_path / "published", repo, "acestep-v15-turbo")
    files = {p.relative_to(src).as_posix(): p.read_bytes() for p in src.rglob("*") if p.is_file()}
    latent = io.BytesIO()
    torch.save(torch.zeros(1, 8, 4), latent)
    files["acestep-v15-turbo/silence_latent.pt"] = latent.getvalue()
    files[lm] = b"\0" * 4096
    fake = FakeHub({repo: files})
    half = len(files[dit]) // 2
    fake.drop_at[(repo, dit)] = half
    monkeypatch.setenv("HF_ENDPOINT", fake.start())
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # conftest's; requests go to 127.0.0.1 only
    try:
        code, out = run(capsys, "pull", "ace-step")
    finally:
        fake.stop()
    assert code == 0 and "verified: all checks passed" in out, out
    assert [g.range for g in fake.hits("GET", repo, dit)] == [None, f"bytes={half}-"]  # resumed, not restarted
    assert not [h for h in fake.log if h.path == lm]  # the 5 Hz planner LM: listed by the hub, never requested
    assert "skipping laion/clap-htsat-unfused (optional)" in out
    found = inventory.find_alias("ace-step")
    assert found is not None and found.usable
    snap = found.folder.parent
    assert {p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file()} == set(files) - {lm}
    assert all((snap / path).read_bytes() == data for path, data in files.items() if path != lm)


def test_cached_snapshots_are_found_verified_and_ranked_music_last(hub, capsys):
    assert inventory.find_alias("ace-step") is None and inventory.resolve_auto()[0] == "toy"
    main = _ace_snapshot(hub, "ACE-Step/Ace-Step1.5", "acestep-v15-turbo")
    assert inventory.resolve_auto() == ("ace-step", None)  # the only real model: the music one is the default
    spec = resolve("ace-step")
    assert spec.family == "ace-step" and spec.source == str(main / "acestep-v15-turbo")
    sft = _ace_snapshot(hub, "ACE-Step/acestep-v15-sft", shared=False)
    found = inventory.find_alias("ace-step-sft")
    assert found is not None and found.usable and found.folder == sft  # its VAE and text encoder: the main repo's
    code, out = run(capsys, "verify", "ace-step")
    assert code == 1 and "FAIL silence_latent.pt: missing" in out, out  # the DiT's learned silence is checked
    (main / "acestep-v15-turbo" / "silence_latent.pt").write_bytes(b"junk")
    code, out = run(capsys, "verify", "ace-step")
    assert "DiT weights: 2 tensors" in out and "shapes match AceStep" in out and "ace-step vae" in out
    # a model that can make sound effects is the better default for a daemon serving any request
    fake_snapshot(hub, "declare-lab/tango", TANGO)
    fake_snapshot(hub, "google/flan-t5-large", {"tokenizer_config.json": "{}", "spiece.model": "junk"})
    assert inventory.resolve_auto() == ("tango", None)


def test_a_dit_without_the_shared_parts_is_listed_as_lacking_them(hub):
    _ace_snapshot(hub, "ACE-Step/acestep-v15-base", shared=False)
    found = inventory.find_alias("ace-step-base")
    assert found is not None and not found.usable
    assert found.lacks == ["ACE-Step/Ace-Step1.5 vae/ and Qwen3-Embedding-0.6B/"]
    assert inventory.resolve_auto()[0] == "toy"


@pytest.mark.parametrize("name", ["ace-step", "ace-step-sft"])
def test_loading_a_missing_alias_says_how_to_pull_it(hub, name):
    from engine.errors import ModelUnavailable
    from engine.models.registry import load_model

    with pytest.raises(ModelUnavailable, match=f"aiedit models pull {name}"):
        load_model(name)
