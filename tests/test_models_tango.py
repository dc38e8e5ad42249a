"""TANGO adapter: tiny model plumbing, the original-layout snapshot loader (round trip), missing weights."""

from __future__ import annotations

import json
import re
import time

import pytest
import torch

from engine.errors import ModelUnavailable
from engine.models.convert_original import convert_hifigan_state_dict, convert_vae_state_dict
from engine.models.tango import KEY, load_tango, tiny_tango, tiny_tango_unet_config


@pytest.fixture(scope="module")
def model():
    return tiny_tango(seed=0)


def _clip(model, seconds: float = 0.64) -> torch.Tensor:
    n = model.frames_for(int(seconds * model.sample_rate)) * model.mel.hop_length
    t = torch.arange(n) / model.sample_rate
    return (0.3 * torch.sin(2 * torch.pi * 330 * t))[None]


def test_facts(model):
    assert model.prediction_type == "v_prediction"  # SD 2.1's schedule
    assert model.sample_rate == 16000 and model.mel.n_mels == 64
    assert model.default_steps == 25 and model.frame_multiple == 16


def test_audio_round_trip_and_prompt(model):
    wave = _clip(model)
    z = model.encode_audio(wave)
    assert z.shape == (1, 8, wave.shape[1] // 160 // 4, 16)
    assert torch.isfinite(model.decode_latent(z)).all()
    cond = model.encode_prompt(["a dog barks", ""])
    h, mask = cond.tensors[KEY], cond.masks[KEY]
    assert h.shape[0] == 2 and h.shape[2] == 32 and mask.shape == h.shape[:2]
    assert mask[0].all() and mask[1].sum() == 1


def test_gradients_and_lerp(model):
    z = model.encode_audio(_clip(model))
    e_opt = model.encode_prompt(["a cat"]).trainable()
    out = model.predict_noise(z, torch.tensor([700]), e_opt)
    assert out.shape == z.shape and torch.isfinite(out).all()
    out.pow(2).mean().backward()
    g = e_opt.tensors[KEY].grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    e_opt = e_opt.detach()
    e_tgt = model.encode_prompt(["heavy rain on a tin roof"])
    n = e_opt.tensors[KEY].shape[1]
    assert torch.equal(e_opt.lerp(e_tgt, 0.0).tensors[KEY][:, :n], e_opt.tensors[KEY])
    assert torch.equal(e_opt.lerp(e_tgt, 1.0).tensors[KEY], e_tgt.tensors[KEY])


def test_peft_lora_trains_only_adapters():
    from peft import LoraConfig, inject_adapter_in_model

    m = tiny_tango(seed=1)
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=m.lora_target_modules()), m.unet)
    trainable = {n for n, p in m.unet.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    z = m.encode_audio(_clip(m))
    m.predict_noise(z, torch.tensor([100]), m.encode_prompt(["wind"])).pow(2).mean().backward()
    assert all(p.grad is None for n, p in m.unet.named_parameters() if n not in trainable)


# -- original-layout snapshot --------------------------------------------------------------------------------


def _to_original_vae(sd: dict[str, torch.Tensor], n_up: int) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL keys → latent-diffusion keys (the inverse of the loader's mapping)."""
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for k, v in sd.items():
        if m := re.fullmatch(r"(encoder|decoder)\.(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", k):
            part, kind, i, j, tail = m.groups()
            i = int(i) if kind == "down" else n_up - 1 - int(i)
            k = f"{part}.{kind}.{i}.block.{j}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.fullmatch(r"(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(down|up)samplers\.0\.conv\.(.+)", k):
            part, kind, i, _, tail = m.groups()
            i = int(i) if kind == "down" else n_up - 1 - int(i)
            k = f"{part}.{kind}.{i}.{kind}sample.conv.{tail}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.+)", k):
            k = f"{m.group(1)}.mid.block_{int(m.group(2)) + 1}.{m.group(3)}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(to_out\.0|\w+)\.(.+)", k):
            k = f"{m.group(1)}.mid.attn_1.{attn[m.group(2)]}.{m.group(3)}"
            if v.ndim == 2:
                v = v[:, :, None, None]  # the original attention uses 1×1 convolutions
        elif m := re.fullmatch(r"(encoder|decoder)\.conv_norm_out\.(.+)", k):
            k = f"{m.group(1)}.norm_out.{m.group(2)}"
        out[k] = v.clone()
    return out


def _to_original_vocoder(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if k in ("mean", "scale"):
            continue
        out["vocoder." + re.sub(r"^upsampler\.", "ups.", k)] = v.clone()
    # one layer still weight-normed, as a checkpoint saved before remove_weight_norm would hold it
    w = out.pop("vocoder.conv_pre.weight")
    g = w.flatten(1).norm(dim=1).reshape(-1, 1, 1) * 2.0
    out["vocoder.conv_pre.weight_g"], out["vocoder.conv_pre.weight_v"] = g, w * 3.0
    return out


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """A fake TANGO hub snapshot with tiny weights in the original layout, plus the reference modules."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    from engine.models.tiny_parts import tiny_vocoder

    root = tmp_path_factory.mktemp("tango")
    folder, flan = root / "snap", root / "flan-t5-tiny"
    (folder / "configs").mkdir(parents=True)
    torch.manual_seed(3)
    ddconfig = {"double_z": True, "z_channels": 8, "resolution": 256, "downsample_time": False, "in_channels": 1,
                "out_ch": 1, "ch": 32, "ch_mult": [1, 1, 2], "num_res_blocks": 1, "attn_resolutions": [],
                "dropout": 0.0}
    vae = AutoencoderKL(in_channels=1, out_channels=1, latent_channels=8, block_out_channels=(32, 32, 64),
                        layers_per_block=1, norm_num_groups=32, down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, scaling_factor=0.75).eval()
    vocoder = tiny_vocoder(seed=3)
    unet_cfg = tiny_tango_unet_config(cross_attention_dim=32)
    unet = UNet2DConditionModel(**unet_cfg).eval()
    tokenizer = ByT5Tokenizer(model_max_length=512)
    t5 = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=37, d_kv=8, num_heads=4,
                                 num_layers=2)).eval()
    tokenizer.save_pretrained(flan)
    t5.config.save_pretrained(flan)

    (folder / "configs" / "diffusion_model_config.json").write_text(json.dumps(unet_cfg))
    (folder / "main_config.json").write_text(json.dumps({
        "text_encoder_name": str(flan), "scheduler_name": "stabilityai/stable-diffusion-2-1",
        "unet_model_name": None, "unet_model_config_path": "configs/diffusion_model_config.json",
        "snr_gamma": 5.0, "freeze_text_encoder": True, "uncondition": False}))
    (folder / "vae_config.json").write_text(json.dumps({
        "image_key": "fbank", "subband": 1, "embed_dim": 8, "time_shuffle": 1, "ddconfig": ddconfig,
        "scale_factor": 0.75}))
    (folder / "stft_config.json").write_text(json.dumps({
        "filter_length": 1024, "hop_length": 160, "win_length": 1024, "n_mel_channels": 64,
        "sampling_rate": 16000, "mel_fmin": 0, "mel_fmax": 8000}))
    voc_cfg = {k: getattr(vocoder.config, k) for k in (
        "model_in_dim", "sampling_rate", "upsample_initial_channel", "upsample_rates", "upsample_kernel_sizes",
        "resblock_kernel_sizes", "resblock_dilation_sizes", "normalize_before")}
    (folder / "vocoder_config.json").write_text(json.dumps(voc_cfg))
    main = {f"unet.{k}": v for k, v in unet.state_dict().items()}
    main.update({f"text_encoder.{k}": v for k, v in t5.state_dict().items()})
    torch.save(main, folder / "pytorch_model_main.bin")
    original_vae = _to_original_vae(vae.state_dict(), n_up=3)
    original_vae.update(_to_original_vocoder(vocoder.state_dict()))
    torch.save(original_vae, folder / "pytorch_model_vae.bin")
    return folder, {"vae": vae, "vocoder": vocoder, "unet": unet, "t5": t5, "tokenizer": tokenizer}


def test_original_layout_keys_are_really_original(snapshot):
    folder, _ = snapshot
    keys = torch.load(folder / "pytorch_model_vae.bin", weights_only=True).keys()
    assert "decoder.up.0.block.0.conv1.weight" in keys and "encoder.mid.attn_1.q.weight" in keys
    assert "vocoder.ups.0.weight" in keys and "vocoder.conv_pre.weight_g" in keys
    assert not any("_blocks" in k or "upsampler" in k for k in keys)


def test_load_tango_reproduces_reference_modules(snapshot):
    folder, ref = snapshot
    m = load_tango(str(folder))
    assert m.scaling_factor == 0.75 and m.prediction_type == "v_prediction" and m.mel.fmax == 8000
    torch.manual_seed(0)
    z = torch.randn(1, 8, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(m.vae.decode(z).sample, ref["vae"].decode(z).sample)
        mel = torch.randn(1, 64, 64) - 4
        want = ref["vae"].encode(mel[:, None]).latent_dist.mode()
        torch.testing.assert_close(m.vae.encode(mel[:, None]).latent_dist.mode(), want)
        # conv_pre was stored weight-normed as (3·w, 2·|w|): the folded weight is 2·w
        ref_voc = ref["vocoder"]
        ref_voc.conv_pre.weight.mul_(2.0)
        torch.testing.assert_close(m.vocoder(mel), ref_voc(mel))
        ref_voc.conv_pre.weight.div_(2.0)
        tok = ref["tokenizer"](["a dog barks"], return_tensors="pt")
        h = ref["t5"](tok.input_ids, attention_mask=tok.attention_mask)[0]
        cond = m.encode_prompt(["a dog barks"])
        torch.testing.assert_close(cond.tensors[KEY], h)
        t = torch.tensor([250])
        want = ref["unet"](z, t, encoder_hidden_states=h, encoder_attention_mask=tok.attention_mask).sample
        torch.testing.assert_close(m.predict_noise(z, t, cond), want)
    assert not any(p.is_meta for mod in m.modules().values() for p in mod.parameters())


def test_converters_reject_unknown_keys():
    with pytest.raises(KeyError):
        convert_vae_state_dict({"encoder.weird.weight": torch.zeros(1)})
    out = convert_hifigan_state_dict({"vocoder.ups.1.bias": torch.zeros(2), "other": torch.zeros(1)})
    assert set(out) == {"upsampler.1.bias", "mean", "scale"}


def test_missing_files_are_named(tmp_path):
    (tmp_path / "main_config.json").write_text("{}")
    with pytest.raises(ModelUnavailable, match=r"pytorch_model_main\.bin"):
        load_tango(str(tmp_path))


def test_missing_folder_and_uncached_id(tmp_path, monkeypatch):
    with pytest.raises(ModelUnavailable, match="does not exist"):
        load_tango(str(tmp_path / "nope"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ModelUnavailable, match="hf download"):
        load_tango("aiedit-tests/no-such-tango")
    assert time.monotonic() - start < 10
