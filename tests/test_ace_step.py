"""ACE-Step 1.5 adapter: on a tiny ACE-Step model (random weights) our text-to-music, repaint and cover sampling
equal diffusers' ``AceStepPipeline`` (``task_type`` text2music, repaint, cover), and the family loads from diffusers'
pipeline layout and from ACE-Step's own checkpoint layout.

Tolerance of the equality tests: latents to 1e-5 absolute. Measured: 0.0 — they agree bit for bit (the same noise
handed to both, the same float32 grid, the same arithmetic in the same order), for the turbo DiT without guidance
and for a base-like DiT with APG guidance alike. The pipeline draws its noise time-major (B, T, C) from the seed
while the stages draw it channel-first (B, C, T), so the tests hand the pipeline our noise (``latents=``); and it
encodes the source audio by *sampling* the VAE posterior with the global RNG, so the tests reseed the global RNG
before it and feed our sampler the latent drawn the same way (the adapter itself takes the posterior mean).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from engine.models.ace_step import (
    KEY,
    AceStep,
    format_prompt,
    load_ace_step,
    original_state,
    pipeline_of,
    tiny_ace_step,
)
from engine.models.base import PromptContext
from engine.params import MusicContext
from engine.stages import sample

ATOL = 1e-5
PROMPT = "a calm piano trio"
FRAMES = 50  # latent frames at 25 Hz = 2 s
SECONDS = FRAMES / 25
MUSIC = MusicContext(lyrics="[verse]\nla la la", bpm=120, key="C major", time_signature="3/4", language="de")


@pytest.fixture(scope="module")
def ace():
    return tiny_ace_step(seed=0)


@pytest.fixture(scope="module")
def ace_guided():
    return tiny_ace_step(seed=1, turbo=False)


def _noise(seed: int) -> torch.Tensor:
    return torch.randn((1, 8, FRAMES), generator=torch.Generator().manual_seed(seed))


def _wave() -> torch.Tensor:
    t = torch.arange(FRAMES * 1920) / 48000
    return 0.3 * torch.stack([torch.sin(2 * math.pi * 330 * t), torch.sin(2 * math.pi * 550 * t)])


def _pipeline_source_latent(m: AceStep, wave: torch.Tensor, rng: int) -> torch.Tensor:
    torch.manual_seed(rng)
    return m.vae.encode(wave[None]).latent_dist.sample()


def _pipe(m: AceStep, seed: int, **kw) -> torch.Tensor:
    out = pipeline_of(m)(PROMPT, audio_duration=SECONDS, generator=None, latents=_noise(seed).transpose(1, 2),
                         output_type="latent", **kw).audios
    return out.transpose(1, 2)


def test_text_to_music_equals_the_pipeline_with_the_songs_metadata(ace):
    ctx = PromptContext(seconds=SECONDS, music=MUSIC)
    cond = ace.encode([PROMPT], ctx)
    ours = sample(ace, [cond], None, latent_shape=(8, FRAMES), steps=8, guidance=1.0, seed=3)
    theirs = _pipe(ace, 3, num_inference_steps=8, lyrics=MUSIC.lyrics, bpm=120, keyscale="C major", timesignature="3",
                   vocal_language="de")
    assert ours.shape == theirs.shape == (1, 8, FRAMES)
    assert torch.allclose(ours, theirs, atol=ATOL, rtol=0)
    other = sample(ace, [cond], None, latent_shape=(8, FRAMES), steps=8, guidance=1.0, seed=4)
    assert (other - ours).abs().max() > 1e-2  # the comparison can fail: another seed gives other latents
    plain = sample(ace, [ace.encode([PROMPT], PromptContext(seconds=SECONDS))], None, latent_shape=(8, FRAMES),
                   steps=8, guidance=1.0, seed=3)
    assert (plain - ours).abs().max() > 1e-2  # and the metadata reaches the DiT


def test_guided_checkpoints_use_the_pipelines_apg_guidance(ace_guided):
    assert not ace_guided.guidance_distilled and ace_guided.default_guidance == 7.0
    cond, null = ace_guided.encode([PROMPT, ""], PromptContext(seconds=SECONDS)).split([1, 1])
    ours = sample(ace_guided, [cond], null, latent_shape=(8, FRAMES), steps=6, guidance=7.0, seed=5)
    theirs = _pipe(ace_guided, 5, num_inference_steps=6, guidance_scale=7.0)
    assert torch.allclose(ours, theirs, atol=ATOL, rtol=0)
    unguided = sample(ace_guided, [cond], null, latent_shape=(8, FRAMES), steps=6, guidance=1.0, seed=5)
    assert (unguided - ours).abs().max() > 1e-2
    # the null branch is the learned null condition over the prompt's length, as the pipeline builds it
    assert torch.equal(null.tensors[KEY][0, 0], ace_guided.condition_encoder.null_condition_emb[0, 0])
    assert null.tensors[KEY].shape == cond.tensors[KEY].shape


def test_repaint_equals_the_pipeline(ace):
    wave = _wave()
    z = _pipeline_source_latent(ace, wave, rng=11)
    keep = torch.ones(1, 1, FRAMES)
    keep[..., int(0.5 * 25):int(1.5 * 25)] = 0  # the pipeline's chunk mask of repainting_start/end 0.5-1.5 s
    ctx = PromptContext(task="repaint", seconds=SECONDS)
    cond, plain = ace.encode([PROMPT], ctx), ace.encode([PROMPT], PromptContext(seconds=SECONDS))
    ours = ace.native_edit("repaint", z, cond, plain, None, strengths=[1.0], keep=keep, steps=8, guidance=1.0, seed=3,
                           on_step=lambda *a: None)
    torch.manual_seed(11)
    theirs = _pipe(ace, 3, num_inference_steps=8, task_type="repaint", src_audio=wave, repainting_start=0.5,
                   repainting_end=1.5)
    assert torch.allclose(ours, theirs, atol=ATOL, rtol=0)
    no_mask = sample(ace, [cond], None, latent_shape=(8, FRAMES), steps=8, guidance=1.0, seed=3)
    assert (no_mask - ours).abs().max() > 1e-2  # without the in-context source the result is another one
    half = ace.native_edit("repaint", z, cond, plain, None, strengths=[1.0, 0.5], keep=keep, steps=8, guidance=1.0,
                           seed=3, on_step=lambda *a: None)
    assert torch.allclose(half[0], ours[0], atol=ATOL)  # a take alone equals itself beside another strength
    assert (half[1] - ours[0]).abs().max() > 1e-2


def test_cover_equals_the_pipeline_at_each_strength(ace):
    wave = _wave()
    z = _pipeline_source_latent(ace, wave, rng=12)
    cond = ace.encode([PROMPT], PromptContext(task="cover", seconds=SECONDS))
    plain = ace.encode([PROMPT], PromptContext(seconds=SECONDS))
    takes = {}
    for s in (1.0, 0.4):
        ours = ace.native_edit("cover", z, cond, plain, None, strengths=[s], keep=None, steps=8, guidance=1.0,
                               seed=3, on_step=lambda *a: None)
        torch.manual_seed(12)
        theirs = _pipe(ace, 3, num_inference_steps=8, task_type="cover", src_audio=wave, audio_cover_strength=s)
        assert torch.allclose(ours, theirs, atol=ATOL, rtol=0), s
        takes[s] = ours[0]
    assert (takes[1.0] - takes[0.4]).abs().max() > 1e-2
    both = ace.native_edit("cover", z, cond, plain, None, strengths=[1.0, 0.4], keep=None, steps=8, guidance=1.0,
                           seed=3, on_step=lambda *a: None)
    assert torch.allclose(both[0], takes[1.0], atol=ATOL) and torch.allclose(both[1], takes[0.4], atol=ATOL)
    text_only = sample(ace, [plain], None, latent_shape=(8, FRAMES), steps=8, guidance=1.0, seed=3)
    assert (text_only - takes[1.0]).abs().max() > 1e-2  # the source's tokens steer the cover


def test_prompt_format_is_the_pipelines(ace):
    pipe = pipeline_of(ace)
    for task in ("text2music", "repaint", "cover"):
        from diffusers.pipelines.ace_step.pipeline_ace_step import TASK_INSTRUCTIONS

        ours = format_prompt("rock", task=task, seconds=12.7, music=MUSIC)
        theirs = pipe._format_prompt("rock", lyrics=MUSIC.lyrics, vocal_language="de", audio_duration=12.7,
                                     instruction=TASK_INSTRUCTIONS[task], bpm=120, keyscale="C major",
                                     timesignature="3")
        assert ours == theirs
    plain = format_prompt("rock", seconds=8.0)
    assert "bpm: N/A" in plain[0] and "duration: 8 seconds" in plain[0] and plain[1].startswith("# Languages\nen")
    assert "bpm: 98" in format_prompt("rock", music=MusicContext(bpm=97.6))[0]


def test_rows_of_different_prompt_lengths_run_as_if_alone(ace):
    """FlowEdit batches a source and a target prompt; the DiT's cross-attention has no padding mask, so each row
    must see exactly its own tokens."""
    short, long = ace.encode(["jazz"]), ace.encode(["a very long description of a slow jazz ballad with brushes"])
    assert short.tensors[KEY].shape[1] < long.tensors[KEY].shape[1]
    from engine.models.base import Conditioning

    both = Conditioning.cat([short, long])
    x = torch.randn(2, 8, FRAMES, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.7, 0.3])
    with torch.no_grad():
        v = ace.predict_noise(x, t, both)
        alone = [ace.predict_noise(x[i:i + 1], t[i:i + 1], c) for i, c in enumerate((short, long))]
    assert torch.allclose(v[0], alone[0][0], atol=1e-6) and torch.allclose(v[1], alone[1][0], atol=1e-6)


def test_shifted_grid_is_the_pipelines(ace):
    pipe = pipeline_of(ace)
    for steps, shift in ((8, 3.0), (50, 1.0), (5, 2.0)):
        from engine.schedules import ShiftedFlowSchedule

        sched = ShiftedFlowSchedule(ace.scheduler, shift=shift)
        theirs = pipe._get_timestep_schedule(num_inference_steps=steps, shift=shift, dtype=torch.float32).tolist()
        assert sched.grid(steps) == [*theirs, 0.0]
    assert ace.schedule.shift == 3.0 and ace.default_steps == 8  # the turbo checkpoint's own


def test_lora_targets_are_the_dits_attention_projections(ace):
    from diffusers.models.transformers.ace_step_transformer import AceStepAttention
    from peft import LoraConfig
    from peft.tuners.lora import LoraModel

    targets = ace.lora_target_modules()
    attn = [n for n, mod in ace.unet.named_modules() if isinstance(mod, AceStepAttention)]
    assert len(attn) == 2 * ace.unet.config.num_hidden_layers  # self- and cross-attention per block
    expected = {f"{a}.{t}" for a in attn for t in targets}
    linear = {n for n, mod in ace.unet.named_modules() if isinstance(mod, torch.nn.Linear)}
    assert expected <= linear
    lora = LoraModel(ace.unet, LoraConfig(r=2, lora_alpha=2, target_modules=targets), "t")
    try:
        wrapped = {n.rsplit(".lora_A", 1)[0] for n, _ in ace.unet.named_parameters() if ".lora_A." in n}
        assert wrapped == expected
    finally:
        lora.unload()
    assert not any("lora" in n for n, _ in ace.unet.named_parameters())


def test_audio_round_trip_shapes_and_posterior_mean(ace):
    wave = _wave()[None]
    z = ace.audio_to_latent(wave)
    assert z.shape == (1, 8, FRAMES) and ace.latents_per_second == 25 and ace.sample_rate == 48000
    assert torch.equal(z, ace.vae.encode(wave).latent_dist.mode())
    audio = ace.latent_to_audio(z)
    assert audio.shape == (1, 2, FRAMES * 1920) and audio.abs().max() <= 1.0
    assert ace.padded_length(1) == 1920 and ace.frames_for(1921) == 2


def test_loads_from_diffusers_layout_and_from_ace_steps_own_checkpoints(ace, tmp_path):
    from safetensors.torch import save_file

    cond = ace.encode([PROMPT])
    want = sample(ace, [cond], None, latent_shape=(8, FRAMES), steps=3, guidance=1.0, seed=2)
    # diffusers' pipeline layout (what AceStepPipeline.save_pretrained writes)
    pipeline_of(ace).save_pretrained(tmp_path / "diffusers")
    m1 = load_ace_step(tmp_path / "diffusers", name="a")
    # ACE-Step's layout: checkpoints/<dit>/{config.json, model.safetensors, silence_latent.pt}, vae/, Qwen3-Embedding
    root = tmp_path / "checkpoints"
    dit = root / "acestep-v15-turbo"
    dit.mkdir(parents=True)
    cfg = {**{k: v for k, v in ace.unet.config.items() if not k.startswith("_")},
           **{k: v for k, v in ace.condition_encoder.config.items()
              if k.startswith(("text_", "timbre_", "num_lyric", "num_timbre"))},
           "pool_window_size": 5, "fsq_dim": 32, "num_attention_pooler_hidden_layers": 1,
           "layer_types": ace.unet.layer_types}
    (dit / "config.json").write_text(json.dumps(cfg))
    save_file(original_state(ace), str(dit / "model.safetensors"))
    torch.save(ace.condition_encoder.silence_latent.transpose(1, 2).contiguous(), dit / "silence_latent.pt")
    ace.vae.save_pretrained(root / "vae")
    ace.text_encoder.save_pretrained(root / "Qwen3-Embedding-0.6B")
    ace.tokenizer.save_pretrained(root / "Qwen3-Embedding-0.6B")
    m2 = load_ace_step(dit, name="b")
    for m in (m1, m2):
        got = sample(m, [m.encode([PROMPT])], None, latent_shape=(8, FRAMES), steps=3, guidance=1.0, seed=2)
        assert torch.equal(got, want)
        assert m.variant == "turbo" and m.audio_tokenizer is not None
    from engine.errors import ModelUnavailable

    (root / "vae" / "config.json").unlink()
    with pytest.raises(ModelUnavailable, match="is not an ACE-Step folder"):
        load_ace_step(root / "vae")
