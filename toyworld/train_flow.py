"""Train the toy flow model (the Stable Audio 3 architecture, shrunk) on the procedural world, from scratch, on a CPU.

    python -m toyworld.train_flow --out engine/weights/toy_flow [--stages ae,whiten,decoder,dit,clap,decoder_mel]
                                  [--quick]
                                  [--max-minutes M]

The same classes the ``stable-audio-3`` family loads, in diffusers' ``StableAudio3Pipeline`` folder layout
(model_index.json, vae/, text_encoder/, tokenizer/, duration_embedder/, transformer/, scheduler/), at 44.1 kHz stereo:

- ``ae``: diffusers ``AutoencoderSAME`` (patch 128, one transformer resampling block of stride 8: ↓1024, 64-dim
  latents at 43 Hz) on 0.37 s crops of 44.1 kHz stereo world clips. SAME has no GAN and no KL: multi-resolution STFT
  + waveform L1, a small latent L2, and noise on the latents before decoding (so the decoder tolerates the imperfect
  latents a small flow model samples).
- ``whiten``: folds each latent channel's mean and std into the soft-norm bottleneck (encoder side) and the
  decoder's input projection, so the flow model sees zero-mean, unit-variance latents with the decoded audio
  unchanged. The toy AudioLDM needed the same (docs/quality.md, "The fix that made it edit").
- ``decoder``: a second round for the decoder alone on the frozen encoder's latents (the latent space does not
  move, so it can run beside ``dit``), with a loss that ignores inaudible magnitude differences.
- ``dit``: diffusers ``StableAudio3DiTModel`` on whole-clip latents (111 frames for 2.56 s), with the rectified-flow
  loss (x_σ = (1 − σ)·x0 + σ·ε, target v = ε − x0); σ half from log-SNR uniform in [−7, 4] (64 % of draws above
  σ = 0.5: at high noise only the text says what the clip holds, the lesson of the toy AudioLDM's second round), half
  uniform; 10 % empty-prompt dropout for classifier-free guidance; the pipeline's duration conditioning (a
  ``StableAudio3DurationEmbedder``, also the extra context token); a quarter of the steps with SA3's inpainting input
  (``local_add_cond`` = mask ∥ masked latents, a random 0.25-1 s gap), so inpainting has learned conditioning.
  The text encoder, a tiny transformers ``T5GemmaEncoderModel`` behind ``world_tokenizer`` (a GemmaTokenizer whose
  BPE merges spell the world's 26 words), trains *jointly* with the DiT: the real SA3 keeps T5Gemma frozen because it
  arrives pretrained on language, while ours starts random; frozen it would hand the DiT fixed random features of
  character strings, trained it learns the word distinctions the flow loss needs, in the same budget. EMA weights
  of both are shipped, and the stage writes the whole ``StableAudio3Pipeline`` folder.
- ``clap`` (issue 25): the flow model's own scorer in ``<out>_clap``, the toy CLAP's recipe plus a random noise floor
  under the clips, so a codec's inaudible floor is not heard as another sound.
- ``decoder_mel`` (issue 25): a third round for the decoder alone on the mel that scorer hears (latent space, and so
  the DiT, unchanged); it took the held-out round trip from Audio 0.52 to 0.82.

Single-threaded by default (the machine is shared); timings go to stdout and ``<out>/train_log.json``.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np
import torch

from toyworld import world
from toyworld.train import log, lr_at, run_stages, set_lr, training_parser

SR = 44100
AE_CROP = 16384  # samples per training crop (64 latents)


def clips_stereo(n: int, start: int = 0) -> tuple[np.ndarray, list[str]]:
    cs = world.dataset(n, start, sr=SR, stereo=True)
    return np.stack([c.wave for c in cs]), [c.caption for c in cs]


# ---------------------------------------------------------------------------------------------- configs

# ↓1024 (patch 128 × stride 8): 64 numbers per 2 × 1024 samples, the real SAME's compression (2 × 4096 → 256)
# at a 4× finer latent rate (43 Hz, 23 ms a latent) so onsets stay placeable and a 2.56 s clip is 111 DiT tokens.
AE_CONFIG = dict(audio_channels=2, patch_size=128, encoder_channels=32, encoder_c_mults=(4,), encoder_strides=(8,),
                 encoder_transformer_depths=(2,), latent_dim=64, use_differential_attention=True, dim_heads=32,
                 ff_mult=2, sliding_window=2, sampling_rate=SR)


def ae_model():
    from diffusers import AutoencoderSAME

    return AutoencoderSAME(**AE_CONFIG)


def stft_loss(y: torch.Tensor, x: torch.Tensor, floor: float = 1e-5) -> torch.Tensor:
    """Multi-resolution STFT loss (log magnitude L1 + spectral convergence) at 44.1 kHz, channels folded in;
    magnitudes below ``floor`` count as equal (a high floor stops inaudible bins in silence from dominating)."""
    y, x = y.reshape(-1, y.shape[-1]), x.reshape(-1, x.shape[-1])
    loss = y.new_zeros(())
    for n_fft, hop in ((2048, 512), (512, 128), (128, 32)):
        w = torch.hann_window(n_fft)
        sy = torch.stft(y, n_fft, hop, window=w, return_complex=True).abs()
        sx = torch.stft(x, n_fft, hop, window=w, return_complex=True).abs()
        loss = loss + (torch.log(sy.clamp(min=floor)) - torch.log(sx.clamp(min=floor))).abs().mean()
        loss = loss + torch.linalg.norm(sy - sx) / torch.linalg.norm(sx).clamp(min=1e-5)
    return loss / 3


# ---------------------------------------------------------------------------------------------- stages

def train_ae(out: Path, q: float) -> dict:
    torch.manual_seed(11)
    rng = np.random.default_rng(11)
    n, steps, batch = max(16, int(400 * q)), max(4, int(AE_STEPS * q)), 6
    waves, _ = clips_stereo(n)
    wt = torch.from_numpy(waves)
    ae = ae_model().train()
    opt = torch.optim.AdamW(ae.parameters(), lr=1e-3, weight_decay=0.0)
    t0 = time.perf_counter()
    for step in range(steps):
        idx = rng.integers(0, n, batch)
        off = rng.integers(0, wt.shape[-1] - AE_CROP + 1, batch)
        x = torch.stack([wt[i, :, o:o + AE_CROP] for i, o in zip(idx, off, strict=True)])
        set_lr(opt, lr_at(step, steps, 2e-3))
        z = ae.encode(x).latents
        z_noisy = z + 0.1 * z.detach().std() * torch.randn_like(z)
        y = ae.decode(z_noisy).sample[..., :AE_CROP]
        wav_l1 = (y - x).abs().mean()
        spec = stft_loss(y, x)
        loss = spec + 5.0 * wav_l1 + 1e-3 * z.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ae.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            log(f"ae {step}/{steps} stft {spec.item():.3f} wav L1 {wav_l1.item():.4f} "
                f"({time.perf_counter() - t0:.0f} s, {(time.perf_counter() - t0) / (step + 1):.2f} s/step)")
            if step % 200 == 0 and step:
                ae.save_pretrained(out / "vae", safe_serialization=True)  # a partial run still leaves an AE
    ae.eval()
    with torch.no_grad():
        full = wt[:8]
        rec = ae(full).sample[..., : full.shape[-1]]
        l1_full, spec_full = (rec - full).abs().mean().item(), stft_loss(rec, full).item()
    ae.save_pretrained(out / "vae", safe_serialization=True)
    log(f"ae done: whole-clip wav L1 {l1_full:.4f}, stft {spec_full:.3f}")
    return {"steps": steps, "batch": batch, "crop": AE_CROP, "wav_l1_full_clip": l1_full, "stft_full_clip": spec_full,
            "params_m": sum(p.numel() for p in ae.parameters()) / 1e6}


def whiten_ae(out: Path, q: float) -> dict:
    """Zero-mean, unit-variance latents per channel, folded into the bottleneck and the decoder's projection.

    Encoder side: z = (x·scale + bias) / running_std, so z' = (z − μ)/σ needs scale/σ and (bias − μ·running_std)/σ.
    Decoder side: it computes proj(z'·running_std) and must equal proj(z·running_std) with z = σ·z' + μ, so the
    projection's weight takes diag(σ) and its bias W·μ·running_std. Idempotent (a second run finds μ 0, σ 1).
    """
    from diffusers import AutoencoderSAME

    ae = AutoencoderSAME.from_pretrained(out / "vae").eval()
    waves, _ = clips_stereo(max(8, int(200 * q)), start=900_000)
    with torch.no_grad():
        x = torch.from_numpy(waves)
        z = torch.cat([ae.encode(x[i:i + 8]).latents for i in range(0, len(x), 8)])
        mu, sigma = z.mean(dim=(0, 2)), z.std(dim=(0, 2))
        before = ae.decode(z[:2]).sample
        bn, proj = ae.bottleneck, ae.decoder.proj
        rs = bn.running_std.item()
        bn.scale.div_(sigma[None, :, None])
        bn.bias.copy_((bn.bias - mu[None, :, None] * rs) / sigma[None, :, None])
        w = proj.weight.clone()  # (hidden, latent)
        proj.weight.mul_(sigma[None, :])
        proj.bias.add_(w @ (mu * rs))
        z_new = ae.encode(x[:2]).latents
        drift = (ae.decode(z_new).sample - before).abs().max().item()
        check = z_new.std(dim=(0, 2))
    ae.save_pretrained(out / "vae", safe_serialization=True)
    log(f"ae whitened: channel means {mu.min():.2f}…{mu.max():.2f}, stds {sigma.min():.2f}…{sigma.max():.2f} → 0/1 "
        f"(2-clip check std {check.mean():.2f}); decoder output drift {drift:.2e}")
    return {"channel_mean_range": [mu.min().item(), mu.max().item()],
            "channel_std_range": [sigma.min().item(), sigma.max().item()], "decode_drift": drift}


AE_STEPS = 500


def train_decoder(out: Path, q: float, max_minutes: float | None = None) -> dict:
    """A second round for the SAME decoder alone, on the whitened latents of the frozen encoder: the latent space
    does not move, so it can run beside ``dit`` (which learns on those latents). Magnitudes below 1e-2 (≈ 90 dB
    under the loudest bins) count as equal, so the loss follows what is audible rather than the exact level of
    digital silence, which dominated round 1's log-magnitude term; latent noise of 0.1 (the latents have unit
    std) keeps the decoder tolerant of imperfect samples."""
    from diffusers import AutoencoderSAME

    torch.manual_seed(12)
    rng = np.random.default_rng(12)
    n, steps, batch = max(16, int(400 * q)), max(4, int(DECODER_STEPS * q)), 6
    waves, _ = clips_stereo(n, start=100_000)
    wt = torch.from_numpy(waves)
    ae = AutoencoderSAME.from_pretrained(out / "vae")
    ae.requires_grad_(False).eval()
    ae.decoder.requires_grad_(True).train()
    params = list(ae.decoder.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    t0 = time.perf_counter()
    step = 0
    for step in range(steps):
        idx = rng.integers(0, n, batch)
        off = rng.integers(0, wt.shape[-1] - AE_CROP + 1, batch)
        x = torch.stack([wt[i, :, o:o + AE_CROP] for i, o in zip(idx, off, strict=True)])
        set_lr(opt, lr_at(step, steps, 1e-3))
        with torch.no_grad():
            z = ae.encode(x).latents
        y = ae.decode(z + 0.1 * torch.randn_like(z)).sample[..., :AE_CROP]
        wav_l1 = (y - x).abs().mean()
        spec = stft_loss(y, x, floor=1e-2)
        loss = spec + 5.0 * wav_l1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        el = time.perf_counter() - t0
        if step % 50 == 0 or step == steps - 1:
            log(f"decoder {step}/{steps} stft {spec.item():.3f} wav L1 {wav_l1.item():.4f} ({el:.0f} s)")
        if max_minutes is not None and el > 60 * max_minutes:
            log(f"decoder: time budget of {max_minutes} min reached at step {step + 1}/{steps}")
            break
    ae.eval()
    ae.save_pretrained(out / "vae", safe_serialization=True)
    return {"steps_done": step + 1, "steps_planned": steps, "batch": batch, "stft_floor": 1e-2,
            "final_stft": spec.item(), "final_wav_l1": wav_l1.item()}


DECODER_STEPS = 1500

# The toy CLAP's front end at 44.1 kHz (ClapFeatureExtractor at 16 kHz: n_fft 1024, hop 160, 64 Slaney mels to
# 8 kHz): the same window and hop in seconds (2822 and 441 samples), so the same mel filters per bin, and power
# scaled by (16000/44100)² so a tone reads the dB it reads there.
CLAP_NFFT, CLAP_HOP = 2822, 441


@functools.cache
def _clap_mel_filters() -> torch.Tensor:
    from transformers.audio_utils import mel_filter_bank

    return torch.from_numpy(mel_filter_bank(num_frequency_bins=CLAP_NFFT // 2 + 1, num_mel_filters=64, min_frequency=0,
                                            max_frequency=8000, sampling_rate=SR, norm="slaney",
                                            mel_scale="slaney").T.astype(np.float32))


def clap_mel_power(y: torch.Tensor) -> torch.Tensor:
    """(B, channels, n) at 44.1 kHz → (B, 64, frames): the mel power the toy CLAP hears, of the channel average."""
    spec = torch.stft(y.mean(dim=1), CLAP_NFFT, CLAP_HOP, window=torch.hann_window(CLAP_NFFT), return_complex=True)
    return _clap_mel_filters() @ ((spec.real ** 2 + spec.imag ** 2) * (16000 / SR) ** 2)


def train_decoder_mel(out: Path, q: float) -> dict:
    """A third round for the decoder alone, on what a listener hears: the mel the toy CLAP reads, in dB with
    differences below -60 dB counted as equal (the flow model's scorer ignores a floor that low, ``clap`` stage),
    the same mel's magnitudes relative to the clip's (loud events must come back loud: after round 2 the round trip
    kept 20 % of the input's rms), and MR-STFT with a 1e-3 floor (stereo, above 8 kHz). Crops are cut from the
    frozen encoder's whole-clip latents (as a 2.56 s edit sees them), with latent noise 0.1; the latent space does
    not move, so the DiT stays valid. Measured: held-out round trip Audio 0.52 → 0.82 (docs/quality.md)."""
    from diffusers import AutoencoderSAME

    n, steps, batch, crop = max(16, int(400 * q)), max(4, int(DECODER_MEL_STEPS * q)), 8, 16
    rng, g = np.random.default_rng(5), torch.Generator().manual_seed(5)
    waves, _ = clips_stereo(n, start=100_000)
    wt = torch.from_numpy(waves)
    ae = AutoencoderSAME.from_pretrained(out / "vae").eval()
    with torch.no_grad():
        z_all = torch.cat([ae.encode(wt[i:i + 16]).latents for i in range(0, n, 16)])
    hop = ae.config.patch_size * int(np.prod(ae.config.encoder_strides))  # samples per latent
    wt = torch.nn.functional.pad(wt, (0, z_all.shape[-1] * hop - wt.shape[-1]))
    ae.requires_grad_(False)
    ae.decoder.requires_grad_(True).train()
    params = list(ae.decoder.parameters())
    opt = torch.optim.AdamW(params, lr=DECODER_MEL_LR, weight_decay=0.0)
    floor = 10 ** (-60 / 10)
    t0 = time.perf_counter()
    parts: dict[str, float] = {}
    for step in range(steps):
        idx, off = rng.integers(0, n, batch), rng.integers(0, z_all.shape[-1] - crop + 1, batch)
        z = torch.stack([z_all[i, :, o:o + crop] for i, o in zip(idx, off, strict=True)])
        x = torch.stack([wt[i, :, o * hop:(o + crop) * hop] for i, o in zip(idx, off, strict=True)])
        set_lr(opt, lr_at(step, steps, DECODER_MEL_LR))
        y = ae.decode(z + 0.1 * torch.randn(z.shape, generator=g)).sample[..., :x.shape[-1]]
        py, px = clap_mel_power(y), clap_mel_power(x)
        mel_db = (10 * torch.log10(py.clamp(min=floor)) - 10 * torch.log10(px.clamp(min=floor))).abs().mean()
        mel_lin = (py.sqrt() - px.sqrt()).abs().mean() / px.sqrt().mean().clamp(min=1e-4)
        spec = stft_loss(y, x, floor=1e-3)
        loss = 0.1 * mel_db + 3.0 * mel_lin + spec
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        parts = {"mel_db": mel_db.item(), "mel_lin": mel_lin.item(), "stft": spec.item()}
        if step % 100 == 0 or step == steps - 1:
            log(f"decoder_mel {step}/{steps} " + " ".join(f"{k} {v:.3f}" for k, v in parts.items())
                + f" ({time.perf_counter() - t0:.0f} s)")
    ae.eval()
    ae.save_pretrained(out / "vae", safe_serialization=True)
    return {"steps": steps, "batch": batch, "crop_latents": crop, "lr": DECODER_MEL_LR, "final": parts}


DECODER_MEL_STEPS = 3000
DECODER_MEL_LR = 3e-3

# ---------------------------------------------------------------------------------------------- text + DiT

TEXT_MAX = 48  # tokens; the world's captions take ≤ 14 with the word merges
COND = 64  # T5Gemma hidden size = the DiT's cond_token_dim and global_cond_dim


def world_tokenizer():
    """A GemmaTokenizer built in memory: Gemma's special ids (pad 0, eos 1, bos 2, unk 3), byte fall-back, one token
    per printable ASCII character and '▁', plus BPE merges that spell each of the world's words (bare words first,
    so a word is one token and the '▁' before it another), so a caption is a dozen tokens and any other text still
    encodes, by characters."""
    from transformers import GemmaTokenizer

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for ch in [chr(i) for i in range(33, 127)] + ["▁"]:
        vocab.setdefault(ch, len(vocab))
    words = sorted({w for c in world.all_captions() for w in c.split()} | {"silence"})
    merges: list[tuple[str, str]] = []
    for piece in [*words, *("▁" + w for w in words)]:
        cur = piece[0]
        for ch in piece[1:]:
            if cur + ch not in vocab:
                merges.append((cur, ch))
                vocab[cur + ch] = len(vocab)
            cur += ch
    tok = GemmaTokenizer(vocab=vocab, merges=merges, model_max_length=TEXT_MAX)
    tok.padding_side = "right"
    return tok


def text_encoder_model(vocab_size: int):
    from transformers import T5GemmaConfig, T5GemmaEncoderModel
    from transformers.models.t5gemma.configuration_t5gemma import T5GemmaModuleConfig

    module = T5GemmaModuleConfig(vocab_size=vocab_size, hidden_size=COND, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
                                 max_position_embeddings=TEXT_MAX * 2, sliding_window=TEXT_MAX * 2,
                                 layer_types=["full_attention", "full_attention"])
    return T5GemmaEncoderModel(T5GemmaConfig(encoder=module.to_dict(), decoder=module.to_dict(),
                                             is_encoder_decoder=False))


def dit_model():
    from diffusers import StableAudio3DiTModel

    latent = AE_CONFIG["latent_dim"]
    return StableAudio3DiTModel(io_channels=latent, patch_size=1, embed_dim=128, depth=4, num_heads=4,
                                cond_token_dim=COND, global_cond_dim=COND, local_add_cond_dim=latent + 1,
                                timestep_features_dim=64, ff_mult=2.0, num_memory_tokens=4,
                                use_differential_attention=True)


def duration_model():
    from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import StableAudio3DurationEmbedder

    return StableAudio3DurationEmbedder(output_dim=COND, fourier_dim=32, max_val=30.0)


def scheduler():
    """Plain Euler steps on the log-SNR sigma grid (``num_train_timesteps=1``: the DiT takes t = σ ∈ [0, 1]). The
    toy model is not distilled, so no ping-pong re-noising (that is the distilled checkpoints' sampler)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0, stochastic_sampling=False)


def encode_text(te, tok, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``StableAudio3Pipeline.encode_prompt`` computes (max-length padding, mask)."""
    ids = tok(prompts, padding="max_length", max_length=TEXT_MAX, truncation=True, return_tensors="pt")
    return te(ids.input_ids, attention_mask=ids.attention_mask)[0], ids.attention_mask


def context(emb: torch.Tensor, mask: torch.Tensor, dur: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``StableAudio3Pipeline.prepare_cross_attention``: the duration embedding appended as one more token."""
    return torch.cat([emb, dur[:, None]], dim=1), torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)


def draw_sigma(rng: np.random.Generator, n: int) -> torch.Tensor:
    lam = rng.uniform(-7.0, 4.0, n)
    sig = np.where(rng.random(n) < 0.5, 1 / (1 + np.exp(lam)), rng.uniform(0.0, 1.0, n))
    return torch.from_numpy(sig.clip(1e-3, 1.0)).float()


def train_dit(out: Path, q: float, max_minutes: float | None = None) -> dict:
    from diffusers import AutoencoderSAME, StableAudio3Pipeline

    torch.manual_seed(14)
    rng = np.random.default_rng(14)
    n, steps, batch = max(24, int(DIT_CLIPS * q)), max(4, int(DIT_STEPS * q)), 8
    ae = AutoencoderSAME.from_pretrained(out / "vae").eval()
    t0 = time.perf_counter()
    lat, caps = [], []
    with torch.no_grad():
        for s in range(0, n, 32):
            waves, c = clips_stereo(min(32, n - s), start=600_000 + s)
            lat.append(ae.encode(torch.from_numpy(waves)).latents)
            caps += c
    lat = torch.cat(lat)
    uniq = [*sorted(set(caps)), ""]
    where = {c: i for i, c in enumerate(uniq)}
    cap_idx = np.array([where[c] for c in caps])
    log(f"dit: {n} latents {tuple(lat.shape[1:])} (mean {lat.mean():.3f}, std {lat.std():.3f}), {len(uniq)} captions, "
        f"in {time.perf_counter() - t0:.0f} s")
    tok = world_tokenizer()
    te = text_encoder_model(len(tok)).train()
    dit = dit_model().train()
    dur_emb = duration_model().train()
    seconds = torch.full((batch,), world.SECONDS)
    params = [*dit.parameters(), *te.parameters(), *dur_emb.parameters()]
    modules = {"dit": dit, "te": te, "dur": dur_emb}
    ema = {k: {n_: v.detach().clone() for n_, v in m.state_dict().items()} for k, m in modules.items()}
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    frames = lat.shape[-1]
    t0 = time.perf_counter()
    avg, step = None, 0
    for step in range(steps):
        idx = rng.integers(0, n, batch)
        z0 = lat[idx]
        prompts = [uniq[cap_idx[i]] if rng.random() >= 0.1 else "" for i in idx]
        sigma = draw_sigma(rng, batch)
        noise = torch.randn_like(z0)
        zt = (1 - sigma[:, None, None]) * z0 + sigma[:, None, None] * noise
        local = None
        if rng.random() < 0.25:  # SA3's inpainting input: 1 = keep, 0 = to fill
            keep = torch.ones(batch, 1, frames)
            for b in range(batch):
                w = int(rng.uniform(0.25, 1.0) * frames / world.SECONDS)
                a = int(rng.integers(0, frames - w))
                keep[b, :, a:a + w] = 0
            local = torch.cat([keep, z0 * keep], dim=1)
        set_lr(opt, lr_at(step, steps, 1e-3, warmup=100))
        emb, mask = encode_text(te, tok, prompts)
        dur = dur_emb(seconds)
        ctx, ctx_mask = context(emb, mask, dur)
        v = dit(zt, sigma, encoder_hidden_states=ctx, global_hidden_states=dur, encoder_attention_mask=ctx_mask,
                local_add_cond=local, return_dict=False)[0]
        loss = ((v - (noise - z0)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            d = min(0.995, (1 + step) / (10 + step))
            for k, m in modules.items():
                for n_, v_ in m.state_dict().items():
                    if v_.dtype.is_floating_point:
                        ema[k][n_].mul_(d).add_(v_.detach(), alpha=1 - d)
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        el = time.perf_counter() - t0
        if step % 50 == 0 or step == steps - 1:
            log(f"dit {step}/{steps} loss {avg:.4f} ({el:.0f} s, {el / (step + 1):.2f} s/step)")
        if max_minutes is not None and el > 60 * max_minutes:
            log(f"dit: time budget of {max_minutes} min reached at step {step + 1}/{steps}; shipping the EMA weights")
            break
    for k, m in modules.items():
        m.load_state_dict(ema[k])
        m.eval()
    pipe = StableAudio3Pipeline(vae=ae, text_encoder=te, tokenizer=tok, duration_embedder=dur_emb, transformer=dit,
                                scheduler=scheduler())
    pipe.save_pretrained(out, safe_serialization=True)
    info = {"steps_done": step + 1, "steps_planned": steps, "batch": batch, "clips": n, "final_loss_ema": avg,
            "params_m": {k: sum(p.numel() for p in m.parameters()) / 1e6 for k, m in modules.items()}}
    info["text_matters"] = text_effect(dit, te, tok, dur_emb, lat[:24], [caps[i] for i in range(24)])
    log(f"dit: x0 error with the caption vs the empty prompt, by σ: {info['text_matters']}")
    return info


def text_effect(dit, te, tok, dur_emb, z0: torch.Tensor, caps: list[str]) -> dict:
    """Mean squared x0 error at a few noise levels, conditioned on the true caption and on the empty prompt: the
    gap is how much the text tells the model (none at all would make text-guided edits impossible)."""
    out = {}
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        dur = dur_emb(torch.full((len(z0),), world.SECONDS))
        for sig in (0.3, 0.6, 0.9):
            noise = torch.randn(z0.shape, generator=g)
            zt = (1 - sig) * z0 + sig * noise
            errs = []
            for prompts in (caps, [""] * len(caps)):
                emb, mask = encode_text(te, tok, prompts)
                ctx, ctx_mask = context(emb, mask, dur)
                v = dit(zt, torch.full((len(z0),), sig), encoder_hidden_states=ctx, global_hidden_states=dur,
                        encoder_attention_mask=ctx_mask, return_dict=False)[0]
                errs.append(((zt - sig * v - z0) ** 2).mean().item())
            out[str(sig)] = {"caption": round(errs[0], 4), "empty": round(errs[1], 4)}
    return out


DIT_CLIPS = 800
DIT_STEPS = 1000

def train_scorer(out: Path, q: float) -> dict:
    """The toy flow model's own CLAP (``<out>_clap``, ``SHIPPED_CLAP["toy-flow"]``): the toy CLAP's recipe on the
    same 16 kHz world clips, plus a random noise floor under every clip (``toyworld.train.floor_noise``), so it
    scores a take by its events and not by whether its silence is digital. Its text tower is no model's text
    encoder (the flow model has its own T5Gemma), so it is written to the scorer's folder only."""
    from toyworld.train import clap_folder, train_clap

    return train_clap(out, q, floor_aug=True, write_text_encoder=False, clap_dir=clap_folder(out))


STAGES = {"ae": train_ae, "whiten": whiten_ae, "decoder": train_decoder, "dit": train_dit, "clap": train_scorer,
          "decoder_mel": train_decoder_mel}
TIMED = ("decoder", "dit")  # stages that take --max-minutes


def main(argv: list[str] | None = None) -> None:
    ap = training_parser("toyworld.train_flow", "toy_flow", "ae,whiten,decoder,dit,clap,decoder_mel")
    ap.description = __doc__.split("\n\n")[0]
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="stop the decoder and DiT stages after this much training time each and ship what they have")
    a = ap.parse_args(argv)
    run_stages(a, lambda name, out, q: STAGES[name](out, q, a.max_minutes) if name in TIMED else STAGES[name](out, q))

if __name__ == "__main__":
    main()
