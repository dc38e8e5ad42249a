"""What the editor refuses to hand back, and what it reads (issue 26): a model output that is not finite fails the
edit with one line instead of becoming silent takes marked done (finding 13)."""

from __future__ import annotations

import pytest
import torch
from conftest import write_clip

from engine.cache import StageCache
from engine.editor import Editor
from engine.errors import EngineError
from engine.params import EditParams, EditRequest, Region

FAST = dict(embed_steps=2, tune_steps=2, sample_steps=3)


@pytest.mark.parametrize("mode", ["lora", "sdedit"])
def test_a_model_that_outputs_nan_fails_the_edit_in_one_line(tmp_path, mode):
    from engine.models.audioldm import tiny_audioldm

    model = tiny_audioldm()
    with torch.no_grad():
        next(model.unet.parameters()).fill_(float("nan"))  # diverged weights
    src = tmp_path / "in.wav"
    write_clip(src, seconds=0.5, sr=16000, channels=1)
    ed = Editor(model, None, StageCache(tmp_path / "cache"))
    with pytest.raises(EngineError, match=r"^the edit produced latents that are not finite \(NaN or Inf\)") as exc:
        ed.edit(EditRequest(str(src), Region(), EditParams("a bell", etas=(0.5,), mode=mode, **FAST)))
    assert "\n" not in str(exc.value)
    assert not list((tmp_path / "cache").glob("*.safetensors"))  # nothing non-finite was kept for a re-take


def test_a_cached_result_that_does_not_fit_the_model_is_run_again_not_failed(tmp_path, tiny_model):
    """Finding 13: a cache entry whose rank does not match its weights failed every later re-take. Now the
    re-take finds it unusable, runs stages 1-2 again and stores a good entry in its place."""
    import json

    src = tmp_path / "in.wav"
    write_clip(src, seconds=0.5, sr=16000, channels=1)
    params = EditParams("a bell", etas=(0.5,), **FAST)
    Editor(tiny_model, None, StageCache(tmp_path / "cache")).edit(EditRequest(str(src), Region(), params))
    [entry] = (tmp_path / "cache").glob("*.safetensors")
    data = entry.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    assert header["__metadata__"]["rank"] == "8"
    header["__metadata__"]["rank"] = "4"  # a whole number, but not the rank its weights have
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    entry.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n:])
    stages: list = []
    result = Editor(tiny_model, None, StageCache(tmp_path / "cache")).edit(
        EditRequest(str(src), Region(), params.with_(etas=(0.2, 0.9))), progress=stages.append)
    assert not result.cache_hit and {"embedding", "finetune"} <= {p.stage for p in stages}
    assert len(result.takes) == 2
    [entry] = (tmp_path / "cache").glob("*.safetensors")
    n = int.from_bytes(entry.read_bytes()[:8], "little")
    assert json.loads(entry.read_bytes()[8:8 + n])["__metadata__"]["rank"] == "8"  # a good entry in its place
