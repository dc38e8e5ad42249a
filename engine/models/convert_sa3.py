"""Stable Audio 3 checkpoints in stable-audio-tools layout → the diffusers folder ``load_stable_audio3`` reads.

Stability publishes SA3 as one ``model.safetensors`` (every module of the training wrapper under its attribute
path) and a ``model_config.json`` (the factory's arguments); diffusers has the same modules under other names
(``AutoencoderSAME``, ``StableAudio3DiTModel``, ``StableAudio3DurationEmbedder``). This module is aiedit's own
conversion, written from the published model code (Stability-AI/stable-audio-3 ``stable_audio_3/factory.py`` and
``models/{diffusion,dit,transformer,autoencoders,bottleneck,conditioners}.py``) and the key mapping diffusers'
``scripts/convert_stable_audio_3_to_diffusers.py`` documents. Where the two differ it refuses instead of guessing:

- **Every tensor is accounted for.** A checkpoint key is either renamed into a component, or a buffer diffusers
  computes itself (checked equal), or the conversion stops naming it: an unknown key means a model variant this
  diffusers cannot represent, and silently dropping it would give a model that loads but sounds wrong.
- **Every target tensor is filled** (strict loading), shapes checked by torch.
- **Config fields the installed diffusers hard-codes are checked** (AdaLN global conditioning, exponential Fourier
  time features, RMS norms, DyT in the codec, a symmetric sliding window): a different value stops the conversion
  with the field's name. Values read from the config instead of assumed: the duration range (diffusers' script
  writes 0-384 s for every size), the codec's feed-forward width, head size, depths and strides.
- **The differential self-attention's fused projection is re-ordered** from the reference's ``[q | k | v | q2 | k2]``
  (``models/transformer.py``, ``Attention.forward``) to diffusers' ``[q1 | q2 | k1 | k2 | v]``; cross-attention's
  ``to_q = [q | q2]`` and ``to_kv = [k | k2 | v]`` already agree.
- **Dtypes are kept** (a bf16 checkpoint stays bf16 on disk; the loader casts), tensors are loaded with
  ``assign=True`` so a 1.4 B DiT is held once, not twice.
- **The text encoder** is not in the checkpoint (the reference's ``T5GemmaConditioner`` keeps it outside its
  state dict, frozen): it comes from the ``google/t5gemma-b-b-ul2`` folder given, its encoder only; a checkpoint that
  does carry ``conditioner.conditioners.prompt.model.*`` has those weights applied on top.
- **The result is written to a temporary folder beside the target and renamed into place** when complete, so an
  interrupted conversion never leaves a folder that looks converted.

Imports torch, safetensors, diffusers and transformers lazily: ``aiedit models`` imports this module only to convert.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHECKPOINT = "model.safetensors"
CONFIG = "model_config.json"
DIT = "model.model."
AE = "pretransform.model."
PROMPT = "conditioner.conditioners.prompt."
SECONDS = "conditioner.conditioners.seconds_total."
OBJECTIVES = {"rf_denoiser": True, "rectified_flow": False}  # → ping-pong (distilled, 8 steps) or Euler (base)


class ConversionError(ValueError):
    """A checkpoint this conversion cannot turn into an equivalent diffusers model (one line, says why)."""


@dataclass
class Plan:
    """What a checkpoint becomes: each component's constructor arguments and, per target key, its source key and
    whether the fused differential QKV is re-ordered; plus the source keys that are derived buffers."""

    vae: dict[str, Any]
    transformer: dict[str, Any]
    duration: dict[str, Any]
    stochastic: bool
    max_tokens: int | None
    keys: dict[str, dict[str, tuple[str, bool]]] = field(default_factory=dict)
    derived: dict[str, tuple[str, str]] = field(default_factory=dict)  # source → (component, target) to compare
    text_encoder_keys: dict[str, str] = field(default_factory=dict)  # source → T5Gemma key
    notes: list[str] = field(default_factory=list)


# -- the config -----------------------------------------------------------------------------------------------------

def _get(cfg: dict, *path: str, default: Any = None) -> Any:
    for p in path:
        if not isinstance(cfg, dict) or p not in cfg:
            return default
        cfg = cfg[p]
    return cfg


def _need(cfg: dict, *path: str) -> Any:
    value = _get(cfg, *path)
    if value is None:
        raise ConversionError(f"{CONFIG} has no {'.'.join(path)}")
    return value


def _expect(value: Any, want: Any, name: str) -> None:
    if value != want:
        raise ConversionError(f"{CONFIG}: {name} is {value!r}; the installed diffusers' Stable Audio 3 classes "
                              f"implement only {want!r}")


def _per_level(value: Any, levels: int, name: str) -> list[int]:
    values = [value] * levels if isinstance(value, int) else list(value or [0])
    if len(values) == 1:
        values *= levels
    if len(values) != levels:
        raise ConversionError(f"{CONFIG}: {name} has {len(values)} entries for {levels} codec levels")
    return [int(v) for v in values]


def vae_kwargs(cfg: dict, notes: list[str]) -> dict[str, Any]:
    """``AutoencoderSAME`` arguments from ``model.pretransform.config`` (factory.create_autoencoder_from_config):
    a ``SAMEEncoder``/``SAMEDecoder`` pair of ``TransformerResamplingBlock`` stacks behind a ``PatchedPretransform``
    and a ``SoftNormBottleneck``."""
    ae = _need(cfg, "model", "pretransform", "config")
    enc, dec = _need(ae, "encoder", "config"), _need(ae, "decoder", "config")
    for key in ("channels", "c_mults", "strides", "transformer_depths", "latent_dim"):
        if enc.get(key) != dec.get(key):
            raise ConversionError(f"{CONFIG}: the codec's encoder and decoder differ in {key} ({enc.get(key)!r} vs "
                                  f"{dec.get(key)!r}); diffusers' AutoencoderSAME mirrors one set")
    # TransformerResamplingBlock's keyword defaults (models/autoencoders.py) for what the config leaves out.
    trb = {"dim_heads": 128, "differential": True, "ff_mult": 3, "dyt": True, "layer_scale": False, "conformer": False,
           "cross_attn": False, "feat_scale": False, "mapping_bias": True, "conv_mapping": False}
    for side, c in (("encoder", enc), ("decoder", dec)):
        for key, default in trb.items():
            if key in ("dim_heads", "differential", "ff_mult"):
                continue
            _expect(c.get(key, default), default, f"model.pretransform.config.{side}.config.{key}")
        if c.get("causal"):
            raise ConversionError(f"{CONFIG}: a causal codec ({side}) is not implemented by AutoencoderSAME")
    for key in ("dim_heads", "differential", "ff_mult"):
        if enc.get(key, trb[key]) != dec.get(key, trb[key]):
            raise ConversionError(f"{CONFIG}: the codec's encoder and decoder differ in {key}")
    window = enc.get("sliding_window")
    if window != dec.get("sliding_window"):
        raise ConversionError(f"{CONFIG}: the codec's encoder and decoder use different sliding windows")
    if window is None:
        notes.append("model_config.json names no codec sliding_window: using 1 latent each side, as diffusers' "
                     "conversion script does")
        window = [1, 1]
    window = list(window) if isinstance(window, (list, tuple)) else [window, window]
    if len(window) != 2 or window[0] != window[1]:
        raise ConversionError(f"{CONFIG}: codec sliding_window {window!r} is not symmetric; AutoencoderSAME's band "
                              "mask is")
    strides = [int(s) for s in _need(enc, "strides")]
    levels = len(strides)
    patch = int(_need(ae, "pretransform", "config", "patch_size"))
    channels = int(_get(ae, "io_channels", default=_get(ae, "pretransform", "config", "channels", default=2)))
    ratio = _get(ae, "downsampling_ratio")
    if ratio is not None and int(ratio) != patch * math.prod(strides):
        raise ConversionError(f"{CONFIG}: downsampling_ratio {ratio} ≠ patch_size {patch} × strides {strides}")
    if int(_get(ae, "pretransform", "config", "oversampling", default=1)) != 1:
        raise ConversionError(f"{CONFIG}: an oversampling patch pretransform is not implemented by AutoencoderSAME")
    latent = int(_get(ae, "latent_dim", default=_need(enc, "latent_dim")))
    return {
        "audio_channels": channels, "patch_size": patch, "encoder_channels": int(_need(enc, "channels")),
        "encoder_c_mults": [int(c) for c in _need(enc, "c_mults")], "encoder_strides": strides,
        "encoder_transformer_depths": [int(d) for d in _need(enc, "transformer_depths")], "latent_dim": latent,
        "use_differential_attention": bool(enc.get("differential", True)),
        "dim_heads": int(enc.get("dim_heads", trb["dim_heads"])), "ff_mult": int(enc.get("ff_mult", trb["ff_mult"])),
        "sliding_window": int(window[0]),
        "encoder_sinusoidal_blocks": _per_level(enc.get("sinusoidal_blocks", 0), levels, "encoder sinusoidal_blocks"),
        "decoder_sinusoidal_blocks": _per_level(dec.get("sinusoidal_blocks", 0), levels, "decoder sinusoidal_blocks"),
        "sampling_rate": int(_need(cfg, "sample_rate")),
    }


def conditioners(cfg: dict) -> dict[str, dict]:
    return {c.get("id"): c for c in _get(cfg, "model", "conditioning", "configs", default=[]) or []}


def dit_kwargs(cfg: dict, shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """``StableAudio3DiTModel`` arguments from ``model.diffusion`` (factory.create_diffusion_cond_from_config →
    ``DiTWrapper`` → ``DiffusionTransformer`` → ``ContinuousTransformer``)."""
    d = _need(cfg, "model", "diffusion")
    dc = _need(d, "config")
    _expect(dc.get("transformer_type", "continuous_transformer"), "continuous_transformer",
            "model.diffusion.config.transformer_type")
    _expect(dc.get("global_cond_type", "prepend"), "adaLN", "model.diffusion.config.global_cond_type")
    _expect(dc.get("timestep_cond_type", "global"), "global", "model.diffusion.config.timestep_cond_type")
    _expect(dc.get("timestep_features_type", "learned"), "expo", "model.diffusion.config.timestep_features_type")
    _expect(bool(dc.get("timestep_features_logsnr", False)), False, "model.diffusion.config.timestep_features_logsnr")
    _expect(dc.get("norm_type", "layer_norm"), "rms_norm", "model.diffusion.config.norm_type")
    _expect(_get(dc, "attn_kwargs", "qk_norm", default="none"), "rms", "model.diffusion.config.attn_kwargs.qk_norm")
    for key in ("input_concat_dim", "prepend_cond_dim"):
        _expect(int(dc.get(key, 0) or 0), 0, f"model.diffusion.config.{key}")
    for key in ("project_cond_tokens", "project_global_cond"):
        _expect(bool(dc.get(key, True)), True, f"model.diffusion.config.{key}")
    for key in ("conformer", "layer_scale", "cross_attn_rotary_pos_emb", "use_sinusoidal_emb", "use_abs_pos_emb"):
        _expect(bool(dc.get(key, False)), False, f"model.diffusion.config.{key}")
    _expect(bool(dc.get("rotary_pos_emb", True)), True, "model.diffusion.config.rotary_pos_emb")
    if dc.get("modular_local_cond_configs") or d.get("modular_local_cond_configs"):
        raise ConversionError(f"{CONFIG}: modular local conditioning is not implemented by StableAudio3DiTModel")
    _expect(list(d.get("cross_attention_cond_ids", [])), ["prompt", "seconds_total"],
            "model.diffusion.cross_attention_cond_ids")
    _expect(list(d.get("global_cond_ids", [])), ["seconds_total"], "model.diffusion.global_cond_ids")
    embed = int(_need(dc, "embed_dim"))
    heads = int(_need(dc, "num_heads"))
    local = dc.get("local_add_cond_dim")
    if local is None and (DIT + "transformer.layers.0.to_local_embed.0.weight") in shapes:
        local = shapes[DIT + "transformer.layers.0.to_local_embed.0.weight"][1]
    if local is None:
        raise ConversionError(f"{CONFIG}: no local_add_cond_dim: StableAudio3DiTModel needs the inpainting input")
    return {
        "io_channels": int(_need(dc, "io_channels")), "patch_size": int(dc.get("patch_size", 1)), "embed_dim": embed,
        "depth": int(_need(dc, "depth")), "num_heads": heads, "cond_token_dim": int(_need(dc, "cond_token_dim")),
        "global_cond_dim": int(_need(dc, "global_cond_dim")), "local_add_cond_dim": int(local),
        "timestep_features_dim": int(dc.get("timestep_features_dim", 256)),
        "ff_mult": float(_get(dc, "ff_kwargs", "mult", default=4)),
        "num_memory_tokens": int(dc.get("num_memory_tokens", 0)),
        "use_differential_attention": bool(_get(dc, "attn_kwargs", "differential", default=False)),
    }


def duration_kwargs(cfg: dict, shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """``StableAudio3DurationEmbedder`` arguments from the ``seconds_total`` NumberConditioner (its range is the
    config's, not a constant)."""
    sec = conditioners(cfg).get("seconds_total")
    if sec is None or sec.get("type") != "number":
        raise ConversionError(f"{CONFIG}: no 'seconds_total' number conditioner (the duration input)")
    c = sec.get("config", {})
    _expect(c.get("fourier_features_type", "learned"), "expo", "seconds_total fourier_features_type")
    weight = shapes.get(SECONDS + "embedder.embedding.1.weight")
    if weight is None:
        raise ConversionError(f"{CHECKPOINT} has no {SECONDS}embedder.embedding.1.weight (the duration embedder)")
    return {"output_dim": int(weight[0]), "fourier_dim": int(weight[1]), "min_val": float(c.get("min_val", 0)),
            "max_val": float(c.get("max_val", 1)), "min_freq": 0.5, "max_freq": 10000.0}


def text_settings(cfg: dict) -> tuple[int | None, str]:
    """The prompt conditioner's token budget and padding mode (T5GemmaConditioner)."""
    prompt = conditioners(cfg).get("prompt")
    if prompt is None or prompt.get("type") != "t5gemma":
        raise ConversionError(f"{CONFIG}: no 'prompt' t5gemma conditioner")
    c = prompt.get("config", {})
    if c.get("model_name", "google/t5gemma-b-b-ul2") != "google/t5gemma-b-b-ul2":
        raise ConversionError(f"{CONFIG}: prompt encoder {c.get('model_name')!r}, not google/t5gemma-b-b-ul2")
    mode = c.get("padding_mode", "zero")
    if mode not in ("zero", "learned"):
        raise ConversionError(f"{CONFIG}: prompt padding_mode {mode!r}: StableAudio3DiTModel replaces padded positions "
                              "with an embedding (zero or learned) and cannot keep them raw")
    return (int(c["max_length"]) if c.get("max_length") else None), mode


# -- the keys -------------------------------------------------------------------------------------------------------

_TRB_LOCAL = [  # inside one TransformerResamplingBlock: reference → diffusers (SAMETransformerResamplingBlock)
    (r"mapping\.(weight_g|weight_v|bias)", r"mapping.\1"),
    (r"new_tokens", "new_tokens"),
    (r"transformers\.(\d+)\.pre_norm\.(alpha|gamma|beta)", r"transformers.\1.norm_attn.\2"),
    (r"transformers\.(\d+)\.self_attn\.to_qkv\.weight", r"transformers.\1.attn.to_qkv.weight"),
    (r"transformers\.(\d+)\.self_attn\.to_out\.weight", r"transformers.\1.attn.to_out.weight"),
    (r"transformers\.(\d+)\.self_attn\.(q_norm|k_norm)\.(alpha|gamma|beta)", r"transformers.\1.attn.\2.\3"),
    (r"transformers\.(\d+)\.ff_norm\.(alpha|gamma|beta)", r"transformers.\1.norm_ff.\2"),
    (r"transformers\.(\d+)\.ff\.ff\.0\.proj\.(weight|bias)", r"transformers.\1.ff.proj_in.\2"),
    (r"transformers\.(\d+)\.ff\.ff\.2\.(weight|bias)", r"transformers.\1.ff.proj_out.\2"),
]
_DIT_TOP = {f"to_timestep_embed.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")} | {
    f"{s}.{i}.weight" for s in ("to_cond_embed", "to_global_embed") for i in (0, 2)} | {
    "preprocess_conv.weight", "postprocess_conv.weight"}
_DIT_INNER = {"transformer.project_in.weight": "proj_in.weight", "transformer.project_out.weight": "proj_out.weight",
              "transformer.memory_tokens": "memory_tokens",
              **{f"transformer.global_cond_embedder.{i}.{p}": f"global_cond_embedder.{i}.{p}"
                 for i in (0, 2) for p in ("weight", "bias")}}
_DIT_BLOCK = [  # inside one DiT TransformerBlock: reference → diffusers (StableAudio3DiTBlock)
    (r"(pre_norm|cross_attend_norm|ff_norm)\.gamma", r"\1.gamma"),
    (r"self_attn\.(to_qkv|to_out)\.weight", r"self_attn.\1.weight"),
    (r"(self_attn|cross_attn)\.(q_norm|k_norm)\.gamma", r"\1.\2.gamma"),
    (r"cross_attn\.(to_q|to_kv|to_out)\.weight", r"cross_attn.\1.weight"),
    (r"ff\.ff\.0\.proj\.(weight|bias)", r"ff.proj_in.\1"),
    (r"ff\.ff\.2\.(weight|bias)", r"ff.proj_out.\1"),
    (r"to_scale_shift_gate", "to_scale_shift_gate"),
    (r"to_local_embed\.(0|2)\.(weight|bias)", r"to_local_embed.\1.\2"),
]


def _sub(rules: list[tuple[str, str]], local: str) -> str | None:
    for pattern, repl in rules:
        if re.fullmatch(pattern, local):
            return re.sub(pattern, repl, local)
    return None


def _trb_depth(shapes: dict, base: str) -> int:
    n = 0
    while f"{base}.{n}.new_tokens" in shapes:
        n += 1
    return n


def map_keys(plan: Plan, shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """Fill ``plan.keys``/``derived``/``text_encoder_keys`` from the checkpoint's keys; returns the keys that fit no
    rule (the caller refuses the checkpoint when any are left)."""
    vae, dit, dur = plan.keys.setdefault("vae", {}), plan.keys.setdefault("transformer", {}), \
        plan.keys.setdefault("duration_embedder", {})
    vae_diff = plan.vae["use_differential_attention"]
    dit_diff = plan.transformer["use_differential_attention"]
    levels = len(plan.vae["encoder_strides"])
    enc_depth = _trb_depth(shapes, AE + "encoder.layers")
    if enc_depth != levels:
        raise ConversionError(f"{CHECKPOINT} has {enc_depth} codec encoder blocks, {CONFIG} says {levels}")
    unknown: list[str] = []
    for key, shape in shapes.items():
        if key.startswith(AE):
            local = key[len(AE):]
            m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)", local) or re.fullmatch(r"decoder\.layers\.(\d+)\.(.+)",
                                                                                      local)
            target = None
            if m:
                side, idx, rest = local.split(".")[0], int(m.group(1)), m.group(2)
                if side == "encoder" and idx < levels:
                    block = f"encoder.blocks.{idx}."
                elif side == "decoder" and 3 <= idx < 3 + levels:  # [Transpose, Linear, Transpose, TRB…]
                    block = f"decoder.blocks.{idx - 3}."
                else:
                    block = None
                if block is not None:
                    if re.fullmatch(r"transformers\.\d+\.rope\.inv_freq", rest):  # persistent in the reference
                        plan.derived[key] = ("vae", block + rest.replace(".rope.", ".attn.rope."))
                        continue
                    sub = _sub(_TRB_LOCAL, rest)
                    if sub is not None:
                        vae[block + sub] = (key, vae_diff and sub.endswith("attn.to_qkv.weight"))
                        continue
                elif side == "encoder" and idx == levels + 1 and rest in ("weight", "bias"):
                    target = f"encoder.proj.{rest}"  # [TRB…, Transpose, Linear, Transpose]
                elif side == "decoder" and idx == 1 and rest in ("weight", "bias"):
                    target = f"decoder.proj.{rest}"
            elif local in ("bottleneck.scaling_factor", "bottleneck.bias", "bottleneck.running_std"):
                target = local.replace("scaling_factor", "scale")
            elif local == "bottleneck.noise_scaling_factor" and math.prod(shape) == 0:
                continue  # noise_augment_dim = 0: an empty parameter
            if target is None:
                unknown.append(key)
            else:
                vae[target] = (key, False)
        elif key.startswith(DIT):
            local = key[len(DIT):]
            m = re.fullmatch(r"transformer\.layers\.(\d+)\.(.+)", local)
            if local in _DIT_TOP:
                dit[local] = (key, False)
            elif local in _DIT_INNER:
                dit[_DIT_INNER[local]] = (key, False)
            elif local == "transformer.rotary_pos_emb.inv_freq":
                plan.derived[key] = ("transformer", "rotary_pos_emb.inv_freq")
            elif m and (sub := _sub(_DIT_BLOCK, m.group(2))) is not None:
                dit[f"transformer_blocks.{m.group(1)}.{sub}"] = (key, dit_diff and sub == "self_attn.to_qkv.weight")
            else:
                unknown.append(key)
        elif key == PROMPT + "padding_embedding":
            dit["prompt_padding_embedding"] = (key, False)
        elif key.startswith(PROMPT + "model."):
            plan.text_encoder_keys[key] = key[len(PROMPT + "model."):]
        elif key.startswith(SECONDS + "embedder.embedding.1.") and key.rsplit(".", 1)[1] in ("weight", "bias"):
            dur["linear." + key.rsplit(".", 1)[1]] = (key, False)
        else:
            unknown.append(key)
    return unknown


def reorder_qkv(weight):
    """Reference fused differential self-attention rows ``[q | k | v | q2 | k2]`` → diffusers' ``[q1 | q2 | k1 | k2
    | v]``."""
    import torch

    q, k, v, q2, k2 = weight.chunk(5, dim=0)
    return torch.cat([q, q2, k, k2, v], dim=0)


def plan_conversion(cfg: dict, shapes: dict[str, tuple[int, ...]]) -> Plan:
    """Everything decided before a tensor is read: constructor arguments, key mapping, refusals."""
    notes: list[str] = []
    objective = _get(cfg, "model", "diffusion", "diffusion_objective")
    if objective not in OBJECTIVES:
        raise ConversionError(f"{CONFIG}: diffusion_objective {objective!r}: Stable Audio 3 checkpoints are "
                              f"{' or '.join(OBJECTIVES)}")
    max_tokens, padding = text_settings(cfg)
    plan = Plan(vae=vae_kwargs(cfg, notes), transformer=dit_kwargs(cfg, shapes), duration=duration_kwargs(cfg, shapes),
                stochastic=OBJECTIVES[objective], max_tokens=max_tokens, notes=notes)
    unknown = map_keys(plan, shapes)
    if unknown:
        shown = ", ".join(sorted(unknown)[:4]) + (f" and {len(unknown) - 4} more" if len(unknown) > 4 else "")
        raise ConversionError(f"{CHECKPOINT} holds tensors the installed diffusers' Stable Audio 3 classes have no "
                              f"place for ({shown}): a model variant this conversion does not know")
    if padding == "learned" and "prompt_padding_embedding" not in plan.keys["transformer"]:
        raise ConversionError(f"{CONFIG} says the prompt padding is learned, but {CHECKPOINT} has no "
                              f"{PROMPT}padding_embedding")
    return plan


# -- reading, building, writing -----------------------------------------------------------------------------------

def read_source(src: Path) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """The parsed ``model_config.json`` and the checkpoint's tensor shapes (header only, no tensor read)."""
    from engine.models.verify import BadWeights, safetensors_header

    ckpt, conf = src / CHECKPOINT, src / CONFIG
    missing = [p.name for p in (ckpt, conf) if not p.is_file()]
    if missing:
        raise ConversionError(f"{src} lacks {' and '.join(missing)} (a Stable Audio 3 checkpoint folder has "
                              f"{CHECKPOINT} and {CONFIG})")
    try:
        cfg = json.loads(conf.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{conf} is unreadable: {str(exc)[:160]}") from None
    try:
        header = safetensors_header(ckpt)
    except (BadWeights, OSError) as exc:
        raise ConversionError(f"{ckpt}: {exc}") from None
    return cfg, {k: tuple(v["shape"]) for k, v in header.items()}


def _load(module, plan_keys: dict[str, tuple[str, bool]], tensors, component: str, extra: dict | None = None) -> None:
    """Fill every persistent tensor of ``module`` (strictly), casting nothing: the checkpoint's dtypes are kept."""
    state = {}
    for target, (source, reorder) in plan_keys.items():
        value = tensors.get_tensor(source)
        state[target] = reorder_qkv(value) if reorder else value
    state.update(extra or {})
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ConversionError(f"{component}: the checkpoint does not fit the config: "
                              f"{' '.join(str(exc).split())[:300]}") from None


@contextmanager
def _quiet_libraries() -> Iterator[None]:
    """No per-file progress bars from diffusers/transformers inside our own progress lines."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    was_d, was_t = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was_d:
            dlog.enable_progress_bar()
        if was_t:
            tlog.enable_progress_bar()


def convert(src: str | Path, text_encoder: str | Path, out: str | Path,
            log: Callable[[str], None] = print) -> Path:
    """Convert the checkpoint folder ``src`` (``model.safetensors`` + ``model_config.json``) with the T5Gemma folder
    ``text_encoder`` (``google/t5gemma-b-b-ul2``: config, weights, tokenizer) into ``out``; returns ``out``."""
    with _quiet_libraries():
        return _convert(Path(src), Path(text_encoder), Path(out), log)


def _convert(src: Path, te_dir: Path, out: Path, log: Callable[[str], None]) -> Path:
    import torch
    from diffusers import AutoencoderSAME, FlowMatchEulerDiscreteScheduler, StableAudio3DiTModel, StableAudio3Pipeline
    from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import StableAudio3DurationEmbedder
    from safetensors import safe_open
    from transformers import AutoConfig, AutoTokenizer, T5GemmaEncoderModel

    from engine.models.tiny_parts import sa3_scheduler_config

    cfg, shapes = read_source(src)
    plan = plan_conversion(cfg, shapes)
    for note in plan.notes:
        log(f"  note: {note}")
    if not (te_dir / "config.json").is_file():
        raise ConversionError(f"{te_dir} is not a T5Gemma folder (no config.json): the text encoder "
                              "google/t5gemma-b-b-ul2 is needed beside the checkpoint")
    with safe_open(str(src / CHECKPOINT), framework="pt", device="cpu") as tensors:
        log(f"  codec: AutoencoderSAME, latent {plan.vae['latent_dim']} × {plan.vae['audio_channels']} ch, "
            f"downsampling {plan.vae['patch_size'] * math.prod(plan.vae['encoder_strides'])}")
        vae = AutoencoderSAME(**plan.vae)
        _load(vae, plan.keys["vae"], tensors, "codec")
        log(f"  transformer: StableAudio3DiTModel, {plan.transformer['depth']} blocks × {plan.transformer['embed_dim']}"
            f"{', differential attention' if plan.transformer['use_differential_attention'] else ''}")
        dit = StableAudio3DiTModel(**plan.transformer)
        extra = {}
        if "prompt_padding_embedding" not in plan.keys["transformer"]:  # padding_mode "zero" ≡ a zero embedding
            extra["prompt_padding_embedding"] = torch.zeros(plan.transformer["cond_token_dim"])
        own = dit.state_dict()
        for source, (comp, target) in plan.derived.items():
            if comp == "transformer":
                extra[target] = _checked_buffer(tensors.get_tensor(source), own[target], source)
        _load(dit, plan.keys["transformer"], tensors, "transformer", extra)
        vae_buffers = dict(vae.named_buffers())
        for source, (comp, target) in plan.derived.items():
            if comp == "vae":
                _checked_buffer(tensors.get_tensor(source), vae_buffers[target], source)
        duration = StableAudio3DurationEmbedder(**plan.duration)
        _load(duration, plan.keys["duration_embedder"], tensors, "duration embedder", {"freqs": duration.freqs})
        te_overrides = {t: tensors.get_tensor(s) for s, t in plan.text_encoder_keys.items()}
    log(f"  text encoder: {te_dir}")
    te_cfg = AutoConfig.from_pretrained(te_dir)
    te_cfg.is_encoder_decoder = False
    encoder = T5GemmaEncoderModel.from_pretrained(te_dir, config=te_cfg)
    width = getattr(getattr(encoder.config, "encoder", encoder.config), "hidden_size", None)
    if width != plan.transformer["cond_token_dim"]:
        raise ConversionError(f"the text encoder in {te_dir} is {width} wide; the transformer's cond_token_dim is "
                              f"{plan.transformer['cond_token_dim']}")
    if te_overrides:
        result = encoder.load_state_dict(te_overrides, strict=False)
        if result.unexpected_keys:
            raise ConversionError(f"{CHECKPOINT} carries text-encoder tensors T5GemmaEncoderModel lacks: "
                                  f"{', '.join(result.unexpected_keys[:4])}")
    tokenizer = AutoTokenizer.from_pretrained(te_dir)
    if plan.max_tokens:
        tokenizer.model_max_length = plan.max_tokens  # the conditioner's own token budget
    tokenizer.padding_side = "right"
    scheduler = FlowMatchEulerDiscreteScheduler(**sa3_scheduler_config(stochastic=plan.stochastic))
    pipe = StableAudio3Pipeline(vae=vae, text_encoder=encoder, tokenizer=tokenizer, duration_embedder=duration,
                                transformer=dit, scheduler=scheduler)
    return _publish(pipe, out, log, {"source": str(src), "text_encoder": str(te_dir),
                                     "diffusion_objective": _get(cfg, "model", "diffusion", "diffusion_objective"),
                                     "notes": plan.notes})


def _checked_buffer(source, computed, name: str):
    """A buffer the diffusers class computes itself: the checkpoint's must match it, else the two models differ."""
    import torch

    if tuple(source.shape) != tuple(computed.shape) or not torch.allclose(source.float(), computed.float(),
                                                                          rtol=1e-5, atol=1e-6):
        raise ConversionError(f"{name} (shape {tuple(source.shape)}) differs from the buffer diffusers computes "
                              f"(shape {tuple(computed.shape)}): its rotary embedding covers other channels")
    return source


def _publish(pipe, out: Path, log: Callable[[str], None], provenance: dict) -> Path:
    """Save into a temporary folder beside ``out`` and rename it into place only once complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".converting-{out.name}")
    old = out.with_name(f".replaced-{out.name}")
    for p in (tmp, old):
        if p.exists():
            shutil.rmtree(p)
    pipe.set_progress_bar_config(disable=True)
    log(f"  writing {out}")
    pipe.save_pretrained(tmp)
    (tmp / "aiedit_conversion.json").write_text(json.dumps(provenance, indent=1), encoding="utf-8")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    if old.exists():
        shutil.rmtree(old)
    return out
