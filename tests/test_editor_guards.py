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
