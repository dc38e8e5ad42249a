"""A Stable Audio 3 checkpoint in Stability's own layout (stable-audio-tools: ``model.safetensors`` +
``model_config.json``), built from a tiny diffusers SA3 model's weights, for the conversion tests.

The key names, shapes and config fields follow the published model code, not aiedit's converter:
Stability-AI/stable-audio-3 at commit 636f906fc0ee54b3f06edf974dc7d3aa99d6841b (2026-05-29),
- ``stable_audio_3/factory.py``: the checkpoint is ``ConditionedDiffusionModelWrapper``'s state dict: ``model`` (a
  ``DiTWrapper`` whose ``model`` is the ``DiffusionTransformer``: ``model.model.*``), ``conditioner``
  (``MultiConditioner.conditioners[id]``) and ``pretransform`` (``AutoencoderPretransform.model`` = the
  ``AudioAutoencoder``: ``pretransform.model.*``); the config's ``model.pretransform.config``, ``model.conditioning``
  and ``model.diffusion`` sections are that factory's arguments;
- ``models/dit.py`` (``DiffusionTransformer``: ``to_timestep_embed``, ``to_cond_embed``, ``to_global_embed`` as
  Linear/SiLU/Linear, ``preprocess_conv``/``postprocess_conv``, ``transformer`` = ``ContinuousTransformer``);
- ``models/transformer.py`` (``ContinuousTransformer``: ``project_in``/``project_out``, ``rotary_pos_emb`` — a
  persistent ``inv_freq`` over ``max(dim_heads // 2, 32)`` channels —, ``memory_tokens``, ``global_cond_embedder``,
  ``layers.{i}`` = ``TransformerBlock``: ``pre_norm``, ``self_attn`` (fused ``to_qkv`` rows ``[q|k|v|q2|k2]`` when
  differential), ``cross_attend_norm``, ``cross_attn`` (``to_q``, ``to_kv``), ``ff_norm``, ``ff.ff.0.proj`` (GLU)
  and ``ff.ff.2``, ``to_scale_shift_gate``, ``to_local_embed``; with ``add_rope`` a persistent ``rope.inv_freq``
  over ``dim_heads // 2``; ``DynamicTanh`` norms have ``alpha``, ``gamma``, ``beta``);
- ``models/autoencoders.py`` (``SAMEEncoder.layers`` = the resampling blocks, then Transpose, Linear, Transpose;
  ``SAMEDecoder.layers`` = Transpose, Linear, Transpose, then the blocks from the deepest level up;
  ``TransformerResamplingBlock``: weight-normed ``mapping`` (``weight_g``, ``weight_v``, ``bias``), ``new_tokens``,
  ``transformers.{j}``);
- ``models/bottleneck.py`` (``SoftNormBottleneck``: ``scaling_factor``, ``bias``, ``noise_scaling_factor``, and
  ``running_std`` with ``auto_scale``);
- ``models/conditioners.py`` (``T5GemmaConditioner`` keeps its encoder outside its state dict; with
  ``padding_mode: learned`` it has ``padding_embedding``; ``NumberConditioner.embedder.embedding`` =
  ExpoFourierFeatures then ``Linear`` at index 1).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from engine.models.stable_audio3 import StableAudio3, tiny_stable_audio3

REFERENCE_COMMIT = "636f906fc0ee54b3f06edf974dc7d3aa99d6841b"
WIDTHS = {"embed_dim": 64, "num_heads": 1}  # 64-wide DiT heads, as SA3 small and medium have


def tiny_model(seed: int = 0) -> StableAudio3:
    return tiny_stable_audio3(seed, **WIDTHS)


def _ref_qkv(weight: torch.Tensor) -> torch.Tensor:
    """diffusers' fused ``[q1|q2|k1|k2|v]`` back to the reference ``[q|k|v|q2|k2]``."""
    q1, q2, k1, k2, v = weight.chunk(5, dim=0)
    return torch.cat([q1, k1, v, q2, k2], dim=0)


def _inv_freq(dim: int) -> torch.Tensor:  # transformer.py RotaryEmbedding(dim), base 10000
    return 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))


def _trb(prefix: str, block, dim_heads: int) -> dict:
    out = {}
    for name, t in block.named_parameters():
        if name.startswith("mapping.") or name == "new_tokens":
            out[prefix + name] = t
    for j, layer in enumerate(block.transformers):
        p = f"{prefix}transformers.{j}."
        for norm_ref, norm in (("pre_norm", layer.norm_attn), ("ff_norm", layer.norm_ff),
                               ("self_attn.q_norm", layer.attn.q_norm), ("self_attn.k_norm", layer.attn.k_norm)):
            for part in ("alpha", "gamma", "beta"):
                out[f"{p}{norm_ref}.{part}"] = getattr(norm, part)
        out[p + "self_attn.to_qkv.weight"] = _ref_qkv(layer.attn.to_qkv.weight)
        out[p + "self_attn.to_out.weight"] = layer.attn.to_out.weight
        out[p + "ff.ff.0.proj.weight"], out[p + "ff.ff.0.proj.bias"] = layer.ff.proj_in.weight, layer.ff.proj_in.bias
        out[p + "ff.ff.2.weight"], out[p + "ff.ff.2.bias"] = layer.ff.proj_out.weight, layer.ff.proj_out.bias
        out[p + "rope.inv_freq"] = _inv_freq(min(dim_heads, layer.norm_attn.gamma.numel()) // 2)  # min(dim_heads, dim)
    return out


def reference_state_dict(m: StableAudio3) -> dict[str, torch.Tensor]:
    """The tiny model's weights under the names (and fused-QKV order) Stability's model code gives them."""
    vae, dit, dur = m.vae, m.unet, m.duration_embedder
    sd: dict[str, torch.Tensor] = {}
    ae = "pretransform.model."
    heads = vae.config.dim_heads
    levels = len(vae.encoder.blocks)
    for i, blk in enumerate(vae.encoder.blocks):
        sd.update(_trb(f"{ae}encoder.layers.{i}.", blk, heads))
    sd[f"{ae}encoder.layers.{levels + 1}.weight"] = vae.encoder.proj.weight
    sd[f"{ae}encoder.layers.{levels + 1}.bias"] = vae.encoder.proj.bias
    sd[f"{ae}decoder.layers.1.weight"] = vae.decoder.proj.weight
    sd[f"{ae}decoder.layers.1.bias"] = vae.decoder.proj.bias
    for k, blk in enumerate(vae.decoder.blocks):
        sd.update(_trb(f"{ae}decoder.layers.{3 + k}.", blk, heads))
    sd[f"{ae}bottleneck.scaling_factor"] = vae.bottleneck.scale
    sd[f"{ae}bottleneck.bias"] = vae.bottleneck.bias
    sd[f"{ae}bottleneck.noise_scaling_factor"] = torch.ones(1, 0, 1)
    sd[f"{ae}bottleneck.running_std"] = vae.bottleneck.running_std
    p = "model.model."
    for name in ("to_timestep_embed.0.weight", "to_timestep_embed.0.bias", "to_timestep_embed.2.weight",
                 "to_timestep_embed.2.bias", "to_cond_embed.0.weight", "to_cond_embed.2.weight",
                 "to_global_embed.0.weight", "to_global_embed.2.weight", "preprocess_conv.weight",
                 "postprocess_conv.weight"):
        sd[p + name] = dit.state_dict()[name]
    sd[p + "transformer.project_in.weight"] = dit.proj_in.weight
    sd[p + "transformer.project_out.weight"] = dit.proj_out.weight
    sd[p + "transformer.memory_tokens"] = dit.memory_tokens
    dim_heads = dit.config.embed_dim // dit.config.num_heads
    sd[p + "transformer.rotary_pos_emb.inv_freq"] = _inv_freq(max(dim_heads // 2, 32))
    for i in (0, 2):
        sd[f"{p}transformer.global_cond_embedder.{i}.weight"] = dit.global_cond_embedder[i].weight
        sd[f"{p}transformer.global_cond_embedder.{i}.bias"] = dit.global_cond_embedder[i].bias
    for i, blk in enumerate(dit.transformer_blocks):
        q = f"{p}transformer.layers.{i}."
        for name, t in blk.state_dict().items():
            ref = name.replace("ff.proj_in.", "ff.ff.0.proj.").replace("ff.proj_out.", "ff.ff.2.")
            sd[q + ref] = _ref_qkv(t) if name == "self_attn.to_qkv.weight" else t
    sd["conditioner.conditioners.prompt.padding_embedding"] = dit.prompt_padding_embedding
    sd["conditioner.conditioners.seconds_total.embedder.embedding.1.weight"] = dur.linear.weight
    sd["conditioner.conditioners.seconds_total.embedder.embedding.1.bias"] = dur.linear.bias
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


def reference_config(m: StableAudio3, *, objective: str = "rf_denoiser") -> dict:
    """``model_config.json`` as ``factory.create_diffusion_cond_from_config`` reads it, for the tiny model."""
    v, d = m.vae.config, m.unet.config
    patched = v.audio_channels * v.patch_size
    same = {"channels": v.encoder_channels, "c_mults": list(v.encoder_c_mults), "strides": list(v.encoder_strides),
            "transformer_depths": list(v.encoder_transformer_depths), "latent_dim": v.latent_dim,
            "dim_heads": v.dim_heads, "ff_mult": v.ff_mult, "differential": v.use_differential_attention,
            "variable_stride": True, "sliding_window": [v.sliding_window, v.sliding_window]}
    return {
        "model_type": "diffusion_cond", "sample_rate": v.sampling_rate, "sample_size": 44100 * 4, "audio_channels": 2,
        "model": {
            "io_channels": d.io_channels,
            "pretransform": {"type": "autoencoder", "iterate_batch": False, "config": {
                "encoder": {"type": "same", "config": {"in_channels": patched, **same}},
                "decoder": {"type": "same", "config": {"out_channels": patched, **same,
                                                      "sinusoidal_blocks": list(v.decoder_sinusoidal_blocks)}},
                "bottleneck": {"type": "softnorm", "config": {"dim": v.latent_dim, "auto_scale": True}},
                "pretransform": {"type": "patched", "config": {"channels": v.audio_channels,
                                                               "patch_size": v.patch_size}},
                "latent_dim": v.latent_dim, "io_channels": v.audio_channels,
                "downsampling_ratio": m.downsampling}},
            "conditioning": {"cond_dim": d.cond_token_dim, "configs": [
                {"id": "prompt", "type": "t5gemma",
                 "config": {"model_name": "google/t5gemma-b-b-ul2", "max_length": m.tokenizer.model_max_length,
                            "padding_mode": "learned"}},
                {"id": "seconds_total", "type": "number",
                 "config": {"min_val": m.duration_embedder.config.min_val,
                            "max_val": m.duration_embedder.config.max_val, "fourier_features_type": "expo"}}]},
            "diffusion": {
                "type": "dit", "diffusion_objective": objective,
                "cross_attention_cond_ids": ["prompt", "seconds_total"], "global_cond_ids": ["seconds_total"],
                "local_add_cond_ids": ["inpaint_mask", "inpaint_masked_input"],
                "config": {"io_channels": d.io_channels, "patch_size": 1, "embed_dim": d.embed_dim, "depth": d.depth,
                           "num_heads": d.num_heads, "cond_token_dim": d.cond_token_dim,
                           "global_cond_dim": d.global_cond_dim, "local_add_cond_dim": d.local_add_cond_dim,
                           "transformer_type": "continuous_transformer", "global_cond_type": "adaLN",
                           "timestep_features_type": "expo", "timestep_features_dim": d.timestep_features_dim,
                           "num_memory_tokens": d.num_memory_tokens, "norm_type": "rms_norm",
                           "attn_kwargs": {"qk_norm": "rms", "differential": d.use_differential_attention},
                           "ff_kwargs": {"mult": d.ff_mult}}}}}


def write_checkpoint(m: StableAudio3, folder: Path, *, with_text_encoder: bool = True, **config) -> Path:
    """``folder/model.safetensors`` + ``model_config.json`` (+ ``t5gemma-b-b-ul2/``, the text encoder a user copies
    beside it), as a user copies them from the hub."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(reference_state_dict(m), str(folder / "model.safetensors"))
    (folder / "model_config.json").write_text(json.dumps(reference_config(m, **config), indent=1), encoding="utf-8")
    if with_text_encoder:
        write_text_encoder(m, folder / "t5gemma-b-b-ul2")
    return folder


def write_text_encoder(m: StableAudio3, folder: Path) -> Path:
    m.text_encoder.save_pretrained(folder)
    m.tokenizer.save_pretrained(folder)
    return folder
