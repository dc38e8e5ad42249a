"""Train the toy AudioLDM-style model and the toy CLAP on the procedural world, from scratch, on a CPU.

    python -m toyworld.train --out engine/weights/toy [--stages vae,whiten,clap,vocoder,unet,unet2] [--quick]

Stages (each seeded; a stage reads what earlier stages wrote into ``--out``):

- ``vae``: diffusers ``AutoencoderKL`` on the engine's own log-mels (``engine.mel.wav_to_logmel``), L1 + tiny KL,
  random 64-frame crops; ``scaling_factor`` set so training latents have unit std.
- ``whiten``: folds the latents' per-channel mean and std into the VAE's 1×1 convolutions, so the UNet learns
  zero-mean, unit-variance latents (decoded audio unchanged; see ``whiten_vae`` for why it matters).
- ``clap``: transformers ``ClapModel`` (tiny HTSAT + tiny RoBERTa text tower), contrastive on (clip, caption),
  saved with its tokenizer and ``ClapFeatureExtractor`` to ``<out>_clap`` (``ClapScorer.load`` reads it). Its text
  tower (+ projection) becomes the diffusion model's ``ClapTextModelWithProjection`` text encoder.
- ``vocoder``: transformers ``SpeechT5HifiGan`` trained with mel + multi-resolution STFT L1 losses only (no GAN).
- ``unet``: diffusers ``UNet2DConditionModel`` (``class_embed_type="simple_projection"``) on the VAE latents of
  whole clips, conditioned on the L2-normalised pooled CLAP text embedding (10 % empty-prompt dropout for
  classifier-free guidance), ε-prediction on AudioLDM's DDIM schedule, EMA weights shipped. Writes the whole
  ``AudioLDMPipeline`` folder (model_index.json, unet/, vae/, vocoder/, text_encoder/, tokenizer/, scheduler/).
- ``unet2``: continues that UNet on 2,000 fresh clips at lr 5e-4, half of each batch at t ≥ 500 and min-SNR-5
  loss weights. Plain ε-MSE with uniform t leaves the text almost unused (high-noise steps, where only the text
  says what the clip holds, carry little of that loss); this round is what made the conditioning matter.

Single-threaded by default (the machine is shared); timings go to stdout and ``<out>/train_log.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.mel import MelConfig, wav_to_logmel
from toyworld import world

MEL = MelConfig()
FRAMES = world.N // MEL.hop_length  # 256
TEXT_MAX = 77
PROJ = 64  # CLAP projection dim = UNet class-embedding input


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def clips_waves(n: int, start: int = 0) -> tuple[np.ndarray, list[str]]:
    cs = world.dataset(n, start)
    return np.stack([c.wave for c in cs]), [c.caption for c in cs]


def logmels(waves: np.ndarray, batch: int = 64) -> torch.Tensor:
    out = []
    for i in range(0, len(waves), batch):
        out.append(wav_to_logmel(torch.from_numpy(waves[i:i + batch]), MEL, frames=FRAMES))
    return torch.cat(out)  # (n, T, 64)


def lr_at(step: int, total: int, base: float, warmup: int = 50) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


# ---------------------------------------------------------------------------------------------- configs

def vae_model():
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=1, out_channels=1, latent_channels=8, norm_num_groups=8,
                         block_out_channels=(16, 32, 32), layers_per_block=1,
                         down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                         sample_size=256)


def vocoder_model():
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    cfg = SpeechT5HifiGanConfig(model_in_dim=64, sampling_rate=16000, upsample_initial_channel=64,
                                upsample_rates=[5, 4, 2, 2, 2], upsample_kernel_sizes=[10, 8, 4, 4, 4],
                                resblock_kernel_sizes=[3, 7], resblock_dilation_sizes=[[1, 3], [1, 3]],
                                normalize_before=False)
    return SpeechT5HifiGan(cfg)


def clap_parts():
    from transformers import ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapTextConfig

    from engine.models.tiny_parts import byte_roberta_tokenizer

    tok = byte_roberta_tokenizer(model_max_length=TEXT_MAX)
    text = ClapTextConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=128, max_position_embeddings=TEXT_MAX + 3, projection_dim=PROJ,
                          bos_token_id=0, pad_token_id=1, eos_token_id=2)
    audio = ClapAudioConfig(spec_size=256, num_mel_bins=64, patch_size=16, patch_stride=(16, 16), window_size=8,
                            depths=(1, 1), num_attention_heads=(2, 4), patch_embeds_hidden_size=32, hidden_size=64,
                            enable_fusion=False, projection_dim=PROJ)
    model = ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=PROJ))
    # The world's 16 kHz, 2.56 s clips: a 3 s window (repeat-padded), the engine's STFT geometry, 0-8 kHz.
    fe = ClapFeatureExtractor(feature_size=64, sampling_rate=16000, hop_length=160, max_length_s=3,
                              fft_window_size=1024, frequency_min=0, frequency_max=8000, top_db=None,
                              truncation="rand_trunc", padding="repeatpad")
    return model, tok, fe


def unet_model():
    from diffusers import UNet2DConditionModel

    boc = (32, 64, 96)
    return UNet2DConditionModel(
        sample_size=None, in_channels=8, out_channels=8, block_out_channels=boc, layers_per_block=1,
        norm_num_groups=16, attention_head_dim=8,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=boc, class_embed_type="simple_projection", projection_class_embeddings_input_dim=PROJ,
        class_embeddings_concat=True)


# ---------------------------------------------------------------------------------------------- stages

def train_vae(out: Path, q: float) -> dict:
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    n, steps, batch, crop = int(2000 * q) or 16, max(4, int(800 * q)), 8, 64
    waves, _ = clips_waves(n)
    mels = logmels(waves)
    vae = vae_model().train()
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    t0 = time.perf_counter()
    for step in range(steps):
        idx = rng.integers(0, n, batch)
        off = rng.integers(0, FRAMES - crop + 1, batch)
        x = torch.stack([mels[i, o:o + crop] for i, o in zip(idx, off, strict=True)]).unsqueeze(1)
        set_lr(opt, lr_at(step, steps, 1e-3))
        post = vae.encode(x).latent_dist
        z = post.sample(generator=None)
        rec = vae.decode(z).sample
        l1 = (rec - x).abs().mean()
        kl = post.kl().mean() / x[0].numel()
        loss = l1 + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            log(f"vae {step}/{steps} l1 {l1.item():.4f} kl {kl.item():.3f} ({time.perf_counter() - t0:.0f} s)")
    vae.eval()
    with torch.no_grad():
        full = mels[: min(n, 128)].unsqueeze(1)
        z = torch.cat([vae.encode(full[i:i + 16]).latent_dist.mode() for i in range(0, len(full), 16)])
        rec = torch.cat([vae.decode(z[i:i + 16]).sample for i in range(0, len(z), 16)])
        l1_full = (rec - full).abs().mean().item()
        std = z.std().item()
    vae.register_to_config(scaling_factor=1.0 / std)
    vae.save_pretrained(out / "vae", safe_serialization=True)
    log(f"vae done: full-clip L1 {l1_full:.4f}, latent std {std:.3f} → scaling_factor {1 / std:.3f}")
    return {"steps": steps, "l1_full_clip": l1_full, "latent_std": std}


def whiten_vae(out: Path, q: float) -> dict:
    """Give the VAE zero-mean, unit-variance latents per channel, by folding the statistics into its 1×1 convs.

    Trained freely, the toy VAE's latent channels sit far from zero (means −0.9 … +1.9 in units of the overall
    std). A diffusion model samples from zero-mean noise, and with AudioLDM's schedule (ᾱ_T ≈ 0.005, not zero
    terminal SNR) an ε-predicting UNet must learn those offsets from a ≈ 0.1 signal at high noise; ours did not, and
    every sample came out near zero mean, far from any real clip. Folding μ, σ into ``quant_conv`` (encoder side)
    and ``post_quant_conv`` (decoder side) changes no decoded output; ``scaling_factor`` becomes 1. Idempotent.
    """
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(out / "vae").eval()
    waves, _ = clips_waves(int(1000 * q) or 16, start=900_000)
    with torch.no_grad():
        mels = logmels(waves).unsqueeze(1)
        z = torch.cat([vae.encode(mels[i:i + 32]).latent_dist.mode() for i in range(0, len(mels), 32)])
        mu, sigma = z.mean(dim=(0, 2, 3)), z.std(dim=(0, 2, 3))
        c = mu.numel()
        qc, pq = vae.quant_conv, vae.post_quant_conv
        before = vae.decode(z[:4]).sample
        qc.weight[:c] /= sigma[:, None, None, None]
        qc.bias[:c] = (qc.bias[:c] - mu) / sigma
        qc.bias[c:] -= 2 * sigma.log()  # log-variance of the rescaled posterior
        w = pq.weight.clone()  # (out, in, 1, 1): z_old = σ·z_new + μ
        pq.weight.mul_(sigma[None, :, None, None])
        pq.bias.add_((w[:, :, 0, 0] * mu[None, :]).sum(dim=1))
        z_new = (z[:4] - mu[None, :, None, None]) / sigma[None, :, None, None]
        drift = (vae.decode(z_new).sample - before).abs().max().item()
    vae.register_to_config(scaling_factor=1.0)
    vae.save_pretrained(out / "vae", safe_serialization=True)
    log(f"vae whitened: channel means {[round(float(v), 2) for v in mu]}, stds {[round(float(v), 2) for v in sigma]}"
        f" → 0/1; decoder output drift {drift:.2e}")
    return {"channel_mean": mu.tolist(), "channel_std": sigma.tolist(), "decode_drift": drift}


def mr_stft_loss(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    loss = y.new_zeros(())
    for n_fft, hop in ((256, 64), (512, 128), (1024, 256)):
        w = torch.hann_window(n_fft)
        sy = torch.stft(y, n_fft, hop, window=w, return_complex=True).abs()
        sx = torch.stft(x, n_fft, hop, window=w, return_complex=True).abs()
        loss = loss + (torch.log(sy.clamp(min=1e-5)) - torch.log(sx.clamp(min=1e-5))).abs().mean()
        loss = loss + torch.linalg.norm(sy - sx) / torch.linalg.norm(sx).clamp(min=1e-5)
    return loss / 3


def train_vocoder(out: Path, q: float) -> dict:
    torch.manual_seed(2)
    rng = np.random.default_rng(2)
    n, steps, batch, crop = int(1500 * q) or 16, max(4, int(2000 * q)), 4, 48
    waves, _ = clips_waves(n, start=200_000)
    mels = logmels(waves)
    wt = torch.from_numpy(waves)
    voc = vocoder_model().train()
    opt = torch.optim.AdamW(voc.parameters(), lr=2e-3, betas=(0.8, 0.99))
    hop = MEL.hop_length
    t0 = time.perf_counter()
    for step in range(steps):
        idx = rng.integers(0, n, batch)
        off = rng.integers(0, FRAMES - crop + 1, batch)
        m = torch.stack([mels[i, o:o + crop] for i, o in zip(idx, off, strict=True)])
        x = torch.stack([wt[i, o * hop:(o + crop) * hop] for i, o in zip(idx, off, strict=True)])
        set_lr(opt, lr_at(step, steps, 2e-3))
        y = voc(m)
        mel_l1 = (wav_to_logmel(y, MEL, frames=crop) - m).abs().mean()
        loss = mel_l1 + mr_stft_loss(y, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(voc.parameters(), 10.0)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"vocoder {step}/{steps} mel L1 {mel_l1.item():.3f} loss {loss.item():.3f} "
                f"({time.perf_counter() - t0:.0f} s)")
    voc.eval()
    voc.save_pretrained(out / "vocoder", safe_serialization=True)
    return {"steps": steps, "mel_l1": mel_l1.item()}


def clap_features(fe, waves: np.ndarray) -> torch.Tensor:
    return torch.cat([fe([w.astype(np.float64)], sampling_rate=16000, return_tensors="pt")["input_features"]
                      for w in waves])


def floor_noise(feats: torch.Tensor, g: torch.Generator, p: float = 0.8, lo_db: float = -100.0,
                hi_db: float = -45.0) -> torch.Tensor:
    """``feats`` (B, 1, frames, mels: the extractor's mel power in dB) with a random noise floor added in the power
    domain, as a codec, a vocoder or a dither leaves one: per clip (with probability ``p``) a level in [``lo_db``,
    ``hi_db``] dB of mel power (white noise at -80 / -60 dBFS rms reads ≈ -71 / -54 here), a tilt of ±15 dB across
    the mel bins, and cell-to-cell fluctuation (gamma, 4 degrees of freedom). The world's softest background (its
    hiss, median -13 dB) stays well above the highest floor (-45 dB, -30 dB at the tilt's edge), so what a caption
    names is never drowned.

    Why: the world's clips are digitally silent between events (-100 dB, the extractor's floor), and a scorer
    trained on them alone hears any floor as a different sound: white noise at -80 dBFS rms, inaudible under the
    events, took the first toy CLAP's Audio of a clean clip from 1.00 to 0.58 and its Text from 0.91 to 0.53, so
    no codec short of bit-exact silence could score as the input (docs/quality.md, "A scorer that hears like a
    listener")."""
    b, _, t, m = feats.shape
    on = (torch.rand(b, generator=g) < p).float().view(b, 1, 1, 1)
    level = lo_db + (hi_db - lo_db) * torch.rand(b, 1, 1, 1, generator=g)
    tilt = 30.0 * (torch.rand(b, 1, 1, 1, generator=g) - 0.5) * torch.linspace(-1, 1, m).view(1, 1, 1, m)
    fluct = -torch.log(torch.rand(b, 1, t, m, 4, generator=g).clamp(min=1e-12)).mean(dim=-1)  # gamma(4), mean 1
    noise = 10 ** ((level + tilt) / 10) * fluct
    mixed = 10 * torch.log10(10 ** (feats / 10) + noise)
    return on * mixed + (1 - on) * feats


def train_clap(out: Path, q: float, floor_aug: bool = False, write_text_encoder: bool = True,
               clap_dir: Path | None = None) -> dict:
    """The toy CLAP (see the module docstring). ``floor_aug`` trains it on :func:`floor_noise` too (the toy flow
    model's scorer, ``toyworld.train_flow --stages clap``); the toy AudioLDM's scorer was trained without, and its
    text tower is that model's text encoder (``write_text_encoder``), so its recipe stays as shipped."""
    from transformers import ClapTextModelWithProjection

    torch.manual_seed(3)
    rng = np.random.default_rng(3)
    g = torch.Generator().manual_seed(33)
    n, steps, batch = max(64, int(1500 * q)), max(4, int(900 * q)), 32
    waves, caps = clips_waves(n, start=400_000)
    model, tok, fe = clap_parts()
    t0 = time.perf_counter()
    feats = clap_features(fe, waves)
    log(f"clap: {n} feature sets in {time.perf_counter() - t0:.0f} s")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    t0 = time.perf_counter()
    for step in range(steps):
        idx = rng.choice(n, batch, replace=False)
        ids = tok([caps[i] for i in idx], padding=True, return_tensors="pt")
        set_lr(opt, lr_at(step, steps, 1e-3))
        x = floor_noise(feats[idx], g) if floor_aug else feats[idx]
        o = model(input_ids=ids.input_ids, attention_mask=ids.attention_mask, input_features=x,
                  is_longer=torch.zeros(batch, 1, dtype=torch.bool), return_loss=True)
        opt.zero_grad(set_to_none=True)
        o.loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            acc = (o.logits_per_audio.argmax(1) == torch.arange(batch)).float().mean().item()
            log(f"clap {step}/{steps} loss {o.loss.item():.3f} in-batch acc {acc:.2f} "
                f"({time.perf_counter() - t0:.0f} s)")
    model.eval()
    clap_dir = clap_dir or clap_folder(out)
    model.save_pretrained(clap_dir, safe_serialization=True)
    tok.save_pretrained(clap_dir)
    fe.save_pretrained(clap_dir)
    if not write_text_encoder:
        return {"steps": steps, "final_loss": o.loss.item(), "floor_aug": floor_aug}
    # Its text tower is the diffusion model's text encoder (AudioLDM conditions on CLAP text embeddings).
    te = ClapTextModelWithProjection(model.config.text_config)
    missing = te.load_state_dict({k: v for k, v in model.state_dict().items()
                                  if k.startswith(("text_model.", "text_projection."))}, strict=True)
    del missing
    te.eval().save_pretrained(out / "text_encoder", safe_serialization=True)
    tok.save_pretrained(out / "tokenizer")
    return {"steps": steps, "final_loss": o.loss.item()}


def clap_folder(out: Path) -> Path:
    return out.parent / f"{out.name}_clap"


def encode_prompts(te, tok, prompts: list[str]) -> torch.Tensor:
    """Exactly what ``engine.models.audioldm.AudioLDM.encode_prompt`` feeds the UNet."""
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return F.normalize(te(ids.input_ids, attention_mask=ids.attention_mask).text_embeds, dim=-1)


def train_unet(out: Path, q: float, resume: int = 0) -> dict:
    """``resume`` = k > 0 continues the shipped UNet for another round (k-th) on fresh clips at half the rate."""
    from diffusers import AudioLDMPipeline, AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import ClapTextModelWithProjection, RobertaTokenizer, SpeechT5HifiGan

    torch.manual_seed(4 + 100 * resume)
    rng = np.random.default_rng(4 + 100 * resume)
    n, steps, batch = int(2000 * q) or 16, max(4, int(UNET_STEPS * q)), 12
    base_lr = 1e-3 if not resume else 5e-4
    vae = AutoencoderKL.from_pretrained(out / "vae").eval()
    te = ClapTextModelWithProjection.from_pretrained(out / "text_encoder").eval()
    tok = RobertaTokenizer.from_pretrained(out / "tokenizer")
    waves, caps = clips_waves(n, start=600_000 + 2000 * resume)
    t0 = time.perf_counter()
    with torch.no_grad():
        mels = logmels(waves).unsqueeze(1)
        lat = torch.cat([vae.encode(mels[i:i + 32]).latent_dist.mode() for i in range(0, n, 32)])
        lat = lat * vae.config.scaling_factor
        uniq = [*sorted(set(caps)), ""]
        emb = torch.cat([encode_prompts(te, tok, uniq[i:i + 64]) for i in range(0, len(uniq), 64)])
    where = {c: i for i, c in enumerate(uniq)}
    cap_idx = torch.tensor([where[c] for c in caps])
    empty = emb[where[""]]
    log(f"unet: {n} latents {tuple(lat.shape[1:])} (std {lat.std():.3f}) and {len(uniq)} prompts encoded in "
        f"{time.perf_counter() - t0:.0f} s")
    sched = DDIMScheduler(**TOY_SCHEDULER_CONFIG)
    unet = (UNet2DConditionModel.from_pretrained(out / "unet") if resume else unet_model()).train()
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    decay = 0.995
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3, weight_decay=0.0)
    t0 = time.perf_counter()
    avg = None
    for step in range(steps):
        idx = torch.from_numpy(rng.integers(0, n, batch))
        z0 = lat[idx]
        c = emb[cap_idx[idx]].clone()
        drop = torch.from_numpy(rng.random(batch) < 0.1)
        c[drop] = empty
        t = torch.randint(0, 1000, (batch,))
        if resume:  # round 2: half the batch at high noise, where only the text can say what the clip holds
            t[: batch // 2] = torch.randint(500, 1000, (batch // 2,))
        noise = torch.randn_like(z0)
        zt = sched.add_noise(z0, noise, t)
        set_lr(opt, lr_at(step, steps, base_lr, warmup=100))
        pred = unet(zt, t, encoder_hidden_states=None, class_labels=c, return_dict=False)[0]
        per = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        if resume:  # min-SNR-5 weighting (Hang et al. 2023) for ε-prediction: min(SNR, 5) / SNR
            snr = sched.alphas_cumprod[t] / (1 - sched.alphas_cumprod[t])
            per = per * (snr.clamp(max=5.0) / snr)
        loss = per.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            d = min(decay, (1 + step) / (10 + step))
            for k, v in unet.state_dict().items():
                if v.dtype.is_floating_point:
                    ema[k].mul_(d).add_(v.detach(), alpha=1 - d)
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        if step % 50 == 0 or step == steps - 1:
            el = time.perf_counter() - t0
            log(f"unet {step}/{steps} loss {avg:.4f} ({el:.0f} s, {el / (step + 1):.2f} s/step)")
    unet.load_state_dict(ema)
    unet.eval()
    pipe = AudioLDMPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched,
                            vocoder=SpeechT5HifiGan.from_pretrained(out / "vocoder").eval())
    pipe.save_pretrained(out, safe_serialization=True)
    params = sum(p.numel() for p in unet.parameters()) / 1e6
    return {"steps": steps, "resume": resume, "final_loss_ema": avg, "params_m": params}


UNET_STEPS = 1500


def train_unet2(out: Path, q: float) -> dict:
    """Round 2 of the UNet: continue round 1 on fresh clips with high-noise emphasis (text conditioning)."""
    return train_unet(out, q, resume=1)


STAGES = {"vae": train_vae, "whiten": whiten_vae, "clap": train_clap, "vocoder": train_vocoder,
          "unet": train_unet, "unet2": train_unet2}


# The schedule the shipped toy UNet was trained on (engine/weights/toy/scheduler): Stable Diffusion's 0.00085 → 0.012,
# ᾱ(999) = 4.7e-3. Pinned here, not taken from the tiny models' config (that one follows AudioLDM's real schedule),
# so a retrain reproduces the shipped model.
TOY_SCHEDULER_CONFIG: dict = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                              "beta_schedule": "scaled_linear", "clip_sample": False, "set_alpha_to_one": False,
                              "steps_offset": 1, "prediction_type": "epsilon"}


def training_parser(prog: str, weights: str, stages: str) -> argparse.ArgumentParser:
    """The options every toy-world training command shares (this one and ``toyworld.train_flow``)."""
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "engine" / "weights" / weights))
    ap.add_argument("--stages", default=stages, help="comma-separated, in dependency order")
    ap.add_argument("--quick", action="store_true", help="2 %% of the data and steps (a smoke test)")
    ap.add_argument("--threads", type=int, default=1)
    return ap


def run_stages(a: argparse.Namespace, run: Callable[[str, Path, float], dict]) -> None:
    """Run ``--stages`` in order (``run(name, out, data_fraction)``), timing each and merging its record into
    ``<out>/train_log.json`` (re-read before each write: a stage run in parallel may have written meanwhile)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    q = 0.02 if a.quick else 1.0
    log_path = out / "train_log.json"
    for name in a.stages.split(","):
        t0 = time.perf_counter()
        log(f"stage {name} …")
        info = run(name, out, q)
        info["wall_s"] = round(time.perf_counter() - t0, 1)
        log(f"stage {name} done in {info['wall_s']} s: {info}")
        record = json.loads(log_path.read_text()) if log_path.exists() else {}
        record[name] = info
        log_path.write_text(json.dumps(record, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    a = training_parser("toyworld.train", "toy", "vae,whiten,clap,vocoder,unet,unet2").parse_args(argv)
    run_stages(a, lambda name, out, q: STAGES[name](out, q))

if __name__ == "__main__":
    main()
