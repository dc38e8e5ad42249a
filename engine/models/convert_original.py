"""Original AudioLDM-layout weights → diffusers ``AutoencoderKL`` and transformers ``SpeechT5HifiGan``.

TANGO ships the VAE of the original AudioLDM code (latent-diffusion ``Encoder``/``Decoder`` + ``quant_conv``/
``post_quant_conv``) with its HiFi-GAN generator inside as ``vocoder.*``, not in diffusers format. The same modules
exist in diffusers/transformers under other names; this module renames keys (the mapping follows diffusers'
``scripts/convert_original_audioldm_to_diffusers.py``) so the shared VAE/vocoder code path serves TANGO too.
"""

from __future__ import annotations

import re

import torch

# The HiFi-GAN that AudioLDM (and TANGO) hard-code: 16 kHz, 64 mels, hop 5·4·2·2·2 = 160 (audioldm/hifigan).
HIFIGAN_16K_64 = {
    "model_in_dim": 64, "sampling_rate": 16000, "upsample_initial_channel": 1024,
    "upsample_rates": [5, 4, 2, 2, 2], "upsample_kernel_sizes": [16, 16, 8, 4, 4],
    "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "normalize_before": False,
}

_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def vae_config_from_ddconfig(ddconfig: dict, scaling_factor: float) -> dict:
    """diffusers ``AutoencoderKL`` kwargs for a latent-diffusion ``ddconfig`` (GroupNorm 32, single-head attn)."""
    if ddconfig.get("attn_resolutions"):
        raise ValueError("VAEs with attention outside the mid block are not supported")
    n = len(ddconfig["ch_mult"])
    return {
        "in_channels": ddconfig.get("in_channels", 1), "out_channels": ddconfig.get("out_ch", 1),
        "latent_channels": ddconfig["z_channels"], "layers_per_block": ddconfig["num_res_blocks"],
        "block_out_channels": [ddconfig["ch"] * m for m in ddconfig["ch_mult"]],
        "down_block_types": ["DownEncoderBlock2D"] * n, "up_block_types": ["UpDecoderBlock2D"] * n,
        "norm_num_groups": 32, "scaling_factor": float(scaling_factor),
    }


def convert_vae_state_dict(original: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename original VAE keys (``vocoder.*`` is skipped) to diffusers ``AutoencoderKL`` keys.

    Decoder ``up.{i}`` runs from the lowest resolution upward in diffusers, so its index is reversed; the
    mid-block attention's 1×1 convolutions become linear layers.
    """
    n_up = 1 + max((int(m.group(1)) for k in original if (m := re.match(r"decoder\.up\.(\d+)\.", k))), default=-1)
    out: dict[str, torch.Tensor] = {}
    for key, value in original.items():
        if key.startswith("vocoder."):
            continue
        new, is_attn = _rename_vae_key(key, n_up)
        if is_attn and value.ndim > 2:
            value = value.reshape(value.shape[0], value.shape[1])
        out[new] = value
    return out


def _rename_vae_key(key: str, n_up: int) -> tuple[str, bool]:
    if key.split(".")[0] in ("quant_conv", "post_quant_conv"):
        return key, False
    part, rest = key.split(".", 1)
    if part not in ("encoder", "decoder"):
        raise KeyError(f"unexpected key in the original VAE: {key}")
    if m := re.fullmatch(r"(down|up)\.(\d+)\.block\.(\d+)\.(.+)", rest):
        kind, i, j, tail = m.groups()
        i = int(i) if kind == "down" else n_up - 1 - int(i)
        return f"{part}.{kind}_blocks.{i}.resnets.{j}.{tail.replace('nin_shortcut', 'conv_shortcut')}", False
    if m := re.fullmatch(r"(down|up)\.(\d+)\.(downsample|upsample)\.conv\.(.+)", rest):
        kind, i, sampler, tail = m.groups()
        i = int(i) if kind == "down" else n_up - 1 - int(i)
        return f"{part}.{kind}_blocks.{i}.{sampler}rs.0.conv.{tail}", False
    if m := re.fullmatch(r"mid\.block_(\d)\.(.+)", rest):
        tail = m.group(2).replace("nin_shortcut", "conv_shortcut")
        return f"{part}.mid_block.resnets.{int(m.group(1)) - 1}.{tail}", False
    if m := re.fullmatch(r"mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)", rest):
        return f"{part}.mid_block.attentions.0.{_ATTN[m.group(1)]}.{m.group(2)}", True
    if m := re.fullmatch(r"norm_out\.(weight|bias)", rest):
        return f"{part}.conv_norm_out.{m.group(1)}", False
    if re.fullmatch(r"conv_(in|out)\.(weight|bias)", rest):
        return key, False
    raise KeyError(f"unexpected key in the original VAE: {key}")


def convert_hifigan_state_dict(original: dict[str, torch.Tensor], prefix: str = "vocoder.",
                               model_in_dim: int = 64) -> dict[str, torch.Tensor]:
    """Original HiFi-GAN generator keys (under ``prefix``) → ``SpeechT5HifiGan`` keys.

    Only ``ups.i`` is renamed (``upsampler.i``). Weight norm, if still present (``weight_g``/``weight_v``), is
    folded into plain weights as ``remove_weight_norm`` would. ``mean``/``scale`` are unused without
    ``normalize_before`` and get their neutral values.
    """
    sd = {k[len(prefix):]: v for k, v in original.items() if k.startswith(prefix)}
    for key in [k for k in sd if k.endswith(".weight_g")]:
        base = key[: -len(".weight_g")]
        sd[f"{base}.weight"] = torch._weight_norm(sd.pop(f"{base}.weight_v"), sd.pop(key), 0)
    out = {re.sub(r"^ups\.(\d+)\.", r"upsampler.\1.", k): v for k, v in sd.items()}
    out.setdefault("mean", torch.zeros(model_in_dim))
    out.setdefault("scale", torch.ones(model_in_dim))
    return out
