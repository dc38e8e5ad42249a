"""Train the toy flow model (the Stable Audio 3 architecture, shrunk) on the procedural world, from scratch, on a CPU.

    python -m toyworld.train_flow --out engine/weights/toy_flow [--stages ae,whiten,text,dit] [--quick]

The same classes the ``stable-audio-3`` family loads, in diffusers' ``StableAudio3Pipeline`` folder layout
(model_index.json, vae/, text_encoder/, tokenizer/, duration_embedder/, transformer/, scheduler/), at 44.1 kHz stereo:

- ``ae``: diffusers ``AutoencoderSAME`` (patch 128, one transformer resampling block of stride 8: ↓1024, 64-dim
  latents at 43 Hz) on 0.37 s crops of 44.1 kHz stereo world clips. SAME has no GAN and no KL: multi-resolution STFT
  + waveform L1, a small latent L2, and noise on the latents before decoding (so the decoder tolerates the imperfect
  latents a small flow model samples).
- ``whiten``: folds each latent channel's mean and std into the soft-norm bottleneck (encoder side) and the
  decoder's input projection, so the flow model sees zero-mean, unit-variance latents with the decoded audio
  unchanged. The toy AudioLDM needed the same (docs/quality.md, "The fix that made it edit").
- ``text``: a tiny transformers ``T5GemmaEncoderModel`` with an offline byte-level tokenizer
  (``engine.models.tiny_parts``), its weights trained as a caption encoder: contrastively against a small audio
  tower on the AE's latents (the tower is thrown away). It then stays frozen for ``dit`` (see ``train_text``).
- ``dit``: diffusers ``StableAudio3DiTModel`` on whole-clip latents, the rectified-flow loss
  (x_σ = (1 − σ)·x0 + σ·ε, target v = ε − x0), σ drawn from a logit-normal shifted to high noise (where only the
  text says what the clip holds), 10 % empty-prompt dropout for classifier-free guidance, the pipeline's duration
  conditioning; EMA weights shipped. Writes the whole pipeline folder.

Single-threaded by default (the machine is shared); timings go to stdout and ``<out>/train_log.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from toyworld import world
from toyworld.train import log, lr_at, set_lr

SR = 44100
AE_CROP = 16384  # samples per training crop (64 latents)


def clips_stereo(n: int, start: int = 0) -> tuple[np.ndarray, list[str]]:
    cs = world.dataset(n, start, sr=SR, stereo=True)
    return np.stack([c.wave for c in cs]), [c.caption for c in cs]


# ---------------------------------------------------------------------------------------------- configs

# ↓1024 (patch 128 × stride 8): 64 numbers per 2 × 1024 samples, the real SAME's compression (2 × 4096 → 256)
# at a 4× finer latent rate (43 Hz, 23 ms a latent) so onsets stay placeable and a 2.56 s clip is 111 DiT tokens.
AE_CONFIG = dict(audio_channels=2, patch_size=128, encoder_channels=48, encoder_c_mults=(4,), encoder_strides=(8,),
                 encoder_transformer_depths=(2,), latent_dim=64, use_differential_attention=True, dim_heads=48,
                 ff_mult=2, sliding_window=2, sampling_rate=SR)


def ae_model():
    from diffusers import AutoencoderSAME

    return AutoencoderSAME(**AE_CONFIG)


def stft_loss(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Multi-resolution STFT loss (log magnitude L1 + spectral convergence) at 44.1 kHz, channels folded in."""
    y, x = y.reshape(-1, y.shape[-1]), x.reshape(-1, x.shape[-1])
    loss = y.new_zeros(())
    for n_fft, hop in ((2048, 512), (512, 128), (128, 32)):
        w = torch.hann_window(n_fft)
        sy = torch.stft(y, n_fft, hop, window=w, return_complex=True).abs()
        sx = torch.stft(x, n_fft, hop, window=w, return_complex=True).abs()
        loss = loss + (torch.log(sy.clamp(min=1e-5)) - torch.log(sx.clamp(min=1e-5))).abs().mean()
        loss = loss + torch.linalg.norm(sy - sx) / torch.linalg.norm(sx).clamp(min=1e-5)
    return loss / 3


# ---------------------------------------------------------------------------------------------- stages

def train_ae(out: Path, q: float) -> dict:
    torch.manual_seed(11)
    rng = np.random.default_rng(11)
    n, steps, batch = max(16, int(600 * q)), max(4, int(AE_STEPS * q)), 8
    waves, _ = clips_stereo(n)
    wt = torch.from_numpy(waves)
    ae = ae_model().train()
    opt = torch.optim.AdamW(ae.parameters(), lr=1e-3, weight_decay=0.0)
    t0 = time.perf_counter()
    for step in range(steps):
        idx = rng.integers(0, n, batch)
        off = rng.integers(0, wt.shape[-1] - AE_CROP + 1, batch)
        x = torch.stack([wt[i, :, o:o + AE_CROP] for i, o in zip(idx, off, strict=True)])
        set_lr(opt, lr_at(step, steps, 1.5e-3))
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
            if step % 500 == 0 and step:
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


AE_STEPS = 800

STAGES = {"ae": train_ae, "whiten": whiten_ae}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="toyworld.train_flow", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "engine" / "weights" / "toy_flow"))
    ap.add_argument("--stages", default="ae,whiten,text,dit", help="comma-separated, in dependency order")
    ap.add_argument("--quick", action="store_true", help="2 %% of the data and steps (a smoke test)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    q = 0.02 if a.quick else 1.0
    log_path = out / "train_log.json"
    for name in a.stages.split(","):
        t0 = time.perf_counter()
        log(f"stage {name} …")
        info = STAGES[name](out, q)
        info["wall_s"] = round(time.perf_counter() - t0, 1)
        log(f"stage {name} done in {info['wall_s']} s: {info}")
        record = json.loads(log_path.read_text()) if log_path.exists() else {}  # a parallel stage may have written
        record[name] = info
        log_path.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
