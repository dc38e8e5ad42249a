"""Host memory of full mode: one pretrained UNet copy per loaded model, one full fine-tune state in the cache."""

from __future__ import annotations

import torch

from engine.cache import StageCache
from engine.models.audioldm import tiny_audioldm
from engine.stages import Tuning, finetune, pretrained_state, tuned


def _z0(model):
    t = torch.arange(16000) / 16000
    return model.encode_audio((0.4 * torch.sin(2 * torch.pi * 440 * t))[None])


def test_full_mode_snapshots_the_pretrained_unet_once_and_still_restores_it():
    m = tiny_audioldm()
    z0, e = _z0(m), m.encode_prompt(["rain"])
    before = {k: v.clone() for k, v in m.unet.state_dict().items()}
    tuning, _ = finetune(m, z0, e, mode="full", steps=3, lr=1e-3, rank=4, seed=0)
    base = pretrained_state(m.unet)
    with tuned(m, tuning):
        assert any(not torch.equal(m.unet.state_dict()[k], before[k]) for k in before)
    tuning2, _ = finetune(m, z0, e, mode="full", steps=2, lr=1e-3, rank=4, seed=1)
    assert pretrained_state(m.unet) is base  # the same copy served all three, no new snapshot
    after = m.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert tuning2.state.keys() == before.keys()


def test_a_weight_changed_outside_the_stages_is_snapshotted_again():
    m = tiny_audioldm()
    base = pretrained_state(m.unet)
    with torch.no_grad():
        m.unet.conv_in.weight.add_(1.0)
    fresh = pretrained_state(m.unet)
    assert fresh is not base and torch.equal(fresh["conv_in.weight"], m.unet.conv_in.weight)


def test_cache_keeps_only_the_latest_full_state():
    cache = StageCache(memory_items=4)
    e = tiny_audioldm().encode_prompt(["x"])
    full = Tuning("full", {"w": torch.zeros(3)})
    cache.put("a", e, full)
    cache.put("l", e, Tuning("lora", {"lora_A": torch.zeros(2)}, 4, ("to_q",)))
    cache.put("b", e, Tuning("full", {"w": torch.ones(3)}))
    assert cache.get("a") is None and cache.get("l") is not None and cache.get("b") is not None
    cache.drop_full()
    assert cache.get("b") is None and cache.get("l") is not None


def test_lora_result_depends_on_the_seed_only_not_on_the_global_rng():
    m = tiny_audioldm()
    z0, e = _z0(m), m.encode_prompt(["rain"])
    torch.manual_seed(1)
    a, _ = finetune(m, z0, e, mode="lora", steps=2, lr=1e-2, rank=4, seed=0)
    torch.manual_seed(2)
    b, _ = finetune(m, z0, e, mode="lora", steps=2, lr=1e-2, rank=4, seed=0)
    assert a.state.keys() == b.state.keys() and all(torch.equal(a.state[k], b.state[k]) for k in a.state)
