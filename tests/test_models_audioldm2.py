"""AudioLDM 2 adapter on its tiny offline model: shapes, masks, gradients, LoRA, GPT-2 loop, missing weights."""

from __future__ import annotations

import copy
import time
from types import SimpleNamespace

import pytest
import torch

from engine.errors import ModelUnavailable
from engine.models.audioldm2 import GPT_KEY, T5_KEY, generate_hidden_states, load_audioldm2, tiny_audioldm2
from engine.models.base import Conditioning


@pytest.fixture(scope="module")
def model():
    return tiny_audioldm2(seed=0)


def _clip(model, seconds: float = 0.64) -> torch.Tensor:
    n = model.frames_for(int(seconds * model.sample_rate)) * model.mel.hop_length
    t = torch.arange(n) / model.sample_rate
    return (0.3 * torch.sin(2 * torch.pi * 440 * t))[None]


def test_facts(model):
    assert model.sample_rate == 16000 and model.mel.n_mels == 64 and model.mel.hop_length == 160
    assert model.frame_multiple == 4 * 4  # tiny: VAE ↓4 × UNet ↓4 (the real 4-level UNet gives 32)
    assert model.prediction_type == "epsilon"
    assert model.clap is not None and model.clap_feature_extractor is not None


def test_audio_round_trip_shapes(model):
    wave = _clip(model)
    z = model.encode_audio(wave)
    frames = wave.shape[1] // 160
    assert z.shape == (1, 8, frames // 4, 16)
    out = model.decode_latent(z)
    # the tiny vocoder's kernels add a few samples per clip (the real HiFi-GAN's do not)
    assert out.shape[0] == 1 and 0 <= out.shape[1] - wave.shape[1] < 160 and torch.isfinite(out).all()


def test_encode_prompt_shapes_and_masks(model):
    cond = model.encode_prompt(["a dog barks", ""])
    gpt, t5 = cond.tensors[GPT_KEY], cond.tensors[T5_KEY]
    assert gpt.shape == (2, 8, 16)
    assert t5.shape[0] == 2 and t5.shape[2] == 32
    assert set(cond.masks) == {T5_KEY}  # the GPT-2 states are never masked, as in the pipeline
    mask = cond.masks[T5_KEY]
    assert mask.shape == t5.shape[:2]
    assert mask[0].all() and mask[1].sum() == 1  # "" → only </s>


def test_gpt_loop_matches_pipeline_generation(model):
    """Our cache-free loop equals AudioLDM2Pipeline.generate_language_model (KV cache, GPT2LMHeadModel)."""
    from diffusers import AudioLDM2Pipeline
    from transformers import GPT2LMHeadModel

    lm = GPT2LMHeadModel(model.language_model.config).eval()
    lm.transformer.load_state_dict(model.language_model.state_dict())
    emb = torch.randn(2, 7, 16)
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    with torch.no_grad():
        ref = AudioLDM2Pipeline.generate_language_model(SimpleNamespace(language_model=lm, device="cpu"), emb,
                                                        max_new_tokens=8, attention_mask=mask)
        ours = generate_hidden_states(model.language_model, emb, mask, 8)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_predict_noise_and_gradients_reach_conditioning(model):
    z = model.encode_audio(_clip(model))
    cond = model.encode_prompt(["rain on a roof"]).trainable()
    out = model.predict_noise(z, torch.tensor([500]), cond)
    assert out.shape == z.shape and torch.isfinite(out).all()
    out.pow(2).mean().backward()
    for k, v in cond.tensors.items():
        assert v.grad is not None and torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0, k


def test_lerp_endpoints_exact(model):
    e_opt = model.encode_prompt(["a cat"])
    e_tgt = model.encode_prompt(["a large dog barking loudly"])
    lo, hi = e_opt.lerp(e_tgt, 0.0), e_opt.lerp(e_tgt, 1.0)
    a, b = e_opt.aligned_with(e_tgt)
    for k in e_opt.tensors:
        assert torch.equal(lo.tensors[k], a.tensors[k]) and torch.equal(hi.tensors[k], b.tensors[k])
    n = e_opt.tensors[T5_KEY].shape[1]
    assert torch.equal(lo.tensors[T5_KEY][:, :n], e_opt.tensors[T5_KEY])
    mid = e_opt.lerp(e_tgt, 0.5)
    z = model.encode_audio(_clip(model))
    assert torch.isfinite(model.predict_noise(z, torch.tensor([10]), mid)).all()


def test_peft_lora_on_unet_trains_only_adapters(model):
    from peft import LoraConfig, inject_adapter_in_model

    m = copy.copy(model)  # shares the text side; a fresh UNet of the same config gets the adapters
    m.unet = type(model.unet).from_config(model.unet.config).eval().requires_grad_(False)
    names = [n for n, _ in m.unet.named_modules()]
    for suffix in m.lora_target_modules():
        assert any(n.endswith(suffix) for n in names), suffix
    z = m.encode_audio(_clip(m))
    cond = m.encode_prompt(["wind"])
    t = torch.tensor([300])
    with torch.no_grad():
        before = m.predict_noise(z, t, cond)
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=m.lora_target_modules()), m.unet)
    trainable = {n for n, p in m.unet.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    out = m.predict_noise(z, t, cond)
    torch.testing.assert_close(out, before)  # lora_B starts at zero
    out.pow(2).mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in m.unet.named_parameters() if n in trainable)
    assert all(p.grad is None for n, p in m.unet.named_parameters() if n not in trainable)


def test_conditioning_state_round_trip(model):
    cond = model.encode_prompt(["birds"])
    back = Conditioning.from_state(cond.state())
    assert all(torch.equal(back.tensors[k], cond.tensors[k]) for k in cond.tensors)
    assert torch.equal(back.masks[T5_KEY], cond.masks[T5_KEY])


def test_missing_folder_raises(tmp_path):
    with pytest.raises(ModelUnavailable, match="does not exist"):
        load_audioldm2(str(tmp_path / "nope"))


def test_uncached_hub_id_raises_quickly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ModelUnavailable, match="hf download"):
        load_audioldm2("aiedit-tests/no-such-audioldm2")
    assert time.monotonic() - start < 10


def test_load_from_diffusers_folder(model, tmp_path):
    """A pipeline folder saved by diffusers loads offline and encodes prompts identically."""
    from diffusers import AudioLDM2Pipeline

    AudioLDM2Pipeline(vae=model.vae, text_encoder=model.clap, text_encoder_2=model.t5,
                      projection_model=model.projection, language_model=model.language_model,
                      tokenizer=model.clap_tokenizer, tokenizer_2=model.t5_tokenizer,
                      feature_extractor=model.clap_feature_extractor, unet=model.unet, scheduler=model.scheduler,
                      vocoder=model.vocoder).save_pretrained(tmp_path)
    loaded = load_audioldm2(str(tmp_path))
    a, b = model.encode_prompt(["a dog", ""]), loaded.encode_prompt(["a dog", ""])
    for k in a.tensors:
        torch.testing.assert_close(a.tensors[k], b.tensors[k])
    assert loaded.prediction_type == model.prediction_type and loaded.frame_multiple == model.frame_multiple
