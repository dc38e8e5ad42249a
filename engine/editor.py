"""The edit, end to end: audio region in, one aligned take per η out, scored.

``Editor`` holds a loaded model (and optionally a CLAP scorer and a stage cache) and runs requests one at a time.
It owns the audio bookkeeping around the stages: the model hears the input at its own rate and channel count (mono
for the AudioLDM family, peak-normalised as in its training; stereo for Stable Audio 3, level kept); every take
comes back at the input's rate, channel count and exact length, time-aligned; an inpainting take equals the input
sample for sample outside the selected range.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import soxr
import torch

from engine import calls
from engine.audio_io import SourceAudio, read_region
from engine.cache import StageCache, cache_key, misfit
from engine.channels import to_input_channels, to_model_channels
from engine.errors import InputError, NotFinite, OutOfMemory
from engine.flowedit import default_draws, default_steps, flowedit
from engine.inversion import ddim_invert, extract_noise_maps, zeta_sample
from engine.models.base import AudioModel, Conditioning, PromptContext
from engine.params import NATIVE_MODES, ZERO_SHOT_MODES, EditParams, EditRequest, MusicContext
from engine.progress import CancelToken, Progress, ProgressFn
from engine.result import EditResult, Take
from engine.splice import OverlapAdd, Window, plan_windows, splice
from engine.stages import finetune, optimize_embedding, sample, tuned

log = logging.getLogger("aiedit.engine")

WINDOW_OVERLAP_S = 1.0  # crossfade between windows of a long clip
INPAINT_FADE_S = 0.02  # equal-power ramps at the inpainting edges, inside the range


@dataclass
class _Span:
    """An inpainting range in input samples and in model samples."""

    start: int
    end: int
    model_start: int
    model_end: int


class Editor:
    """Runs edits on one loaded model. Not thread-safe: one edit at a time (a GPU holds one model)."""

    def __init__(self, model: AudioModel, scorer=None, cache: StageCache | None = None) -> None:
        self.model = model
        self.flowedit_draws: int | None = None  # FlowEdit's noise draws a step; None = by device (engine.flowedit)
        self.scorer = scorer
        self.cache = cache if cache is not None else StageCache()
        self._prompt_cache: dict[tuple[str, PromptContext], tuple[Conditioning, Conditioning]] = {}

    @property
    def model_name(self) -> str:
        return self.model.name

    def edit(self, request: EditRequest, progress: ProgressFn | None = None,
             cancel: CancelToken | None = None, audio: SourceAudio | None = None) -> EditResult:
        """Run one request; raises InputError, OutOfMemory, Cancelled (all before anything is returned).

        ``audio``: the region, already read by the caller (:func:`engine.audio_io.read_source`, e.g. from a
        descriptor it checked); the request's source and region are then not opened or read again."""
        request.validate()
        self.check_mode(request.params)
        report = progress or (lambda p: None)
        token = cancel or CancelToken()
        try:
            return self._edit(request, report, token, audio)
        except torch.cuda.OutOfMemoryError:
            raise self._oom() from None
        except RuntimeError as exc:
            if "out of memory" in str(exc).lower():
                raise self._oom() from None
            raise

    def _oom(self) -> OutOfMemory:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        elif self.model.device.type == "mps":
            torch.mps.empty_cache()
        return OutOfMemory("the GPU ran out of memory: try LoRA mode, a shorter region or fewer η values; "
                           "the model itself is unchanged")

    def check_mode(self, params: EditParams) -> None:
        """Refuse up front, in one line, a mode (or start) this model cannot run."""
        m = self.model
        if params.mode not in m.modes:
            raise InputError(f"{m.name} cannot run mode {params.mode!r}: it runs {', '.join(m.modes)}")
        if params.start == "inversion" and not m.can_invert:
            raise InputError(f"{m.name} has no DDIM inversion: use --start noise (or --mode flowedit to keep the "
                             "input's timing)")

    def resolve_params(self, params: EditParams) -> EditParams:
        """The parameters an edit will really use: unset numbers filled from this model's defaults, then the
        paper's (what results record, and what the cache keys on)."""
        m = self.model
        steps = m.default_steps
        if params.mode == "flowedit" and m.schedule.kind == "flow":
            # FlowEdit integrates an ODE on the velocity difference: its own step count, by device (engine.flowedit)
            steps = default_steps(m.schedule, params.etas, m.device)
        defaults = {**m.stage_defaults, "sample_steps": steps, "guidance": m.default_guidance}
        return params.resolved(defaults).validate()

    # -- the pipeline ------------------------------------------------------------------------------------------

    def context_notes(self, request: EditRequest, p: EditParams) -> tuple[EditParams, MusicContext, list[str]]:
        """The parameters and musical context this model really uses, and a line for each thing it leaves out
        (a context field it does not take, guidance on a guidance-distilled model, a mode's caveat)."""
        m = self.model
        given = request.music.given()
        notes = [f"{f} ignored: {m.name} does not take {'musical context' if not m.takes else 'it'}"
                 for f in given if f not in m.takes]
        music = MusicContext(**{f: getattr(request.music, f) for f in given if f in m.takes})
        if m.guidance_distilled and p.guidance is not None and p.guidance > 1.0:
            notes.append(f"guidance {p.guidance:g} ignored: {m.name} is guidance-distilled and samples without it")
            p = p.with_(guidance=1.0)
        if p.mode in m.mode_notes:
            notes.append(m.mode_notes[p.mode])
        return p, music, notes

    def _edit(self, request: EditRequest, report: ProgressFn, token: CancelToken,
              audio: SourceAudio | None) -> EditResult:
        p, music, notes = self.context_notes(request, self.resolve_params(request.params))
        timings: dict[str, float] = {}
        counts: dict[str, int] = {}
        t0 = time.perf_counter()
        report(Progress("preparing", 0, 1))
        src = audio if audio is not None else read_region(request.source, request.region)
        data, sr = src.samples, src.sample_rate
        del src, audio
        frames, channels = data.shape
        span = self._inpaint_span(p, frames, sr)
        if span is not None and p.mode == "repaint":
            lo, hi = self.model.repaint_seconds
            length = (span.end - span.start) / sr
            if not lo <= length <= hi:
                raise InputError(f"{self.model_name} repaints ranges of {lo:g} s to {hi:g} s: the range "
                                 f"{p.inpaint.start:.3f}-{p.inpaint.end:.3f} s is {length:.3f} s long")
        msr = self.model.sample_rate
        x, dc, gain = self._model_input(data, sr)
        total = len(x)
        window = int(self.model.max_seconds * msr)
        focus = (span.model_start, span.model_end) if span else (0, total)
        overlap = min(int(WINDOW_OVERLAP_S * msr), window // 4)
        windows = plan_windows(total, focus, window, overlap)
        log.info("%s: %.1f s edited in %d window%s (the model's window: %g s)", self.model.name, total / msr,
                 len(windows), "" if len(windows) == 1 else "s", self.model.max_seconds)
        timings["prepare"] = time.perf_counter() - t0
        report(Progress("preparing", 1, 1))

        # Each take is joined as its windows arrive, in one float32 buffer at the model's rate (the decoder's own
        # precision): holding every window of every take in float64 until the end cost 3x the takes (issue 26).
        joined: list[OverlapAdd | None] = [None] * len(p.etas)
        cache_hits = 0
        for k, win in enumerate(windows):
            with self.model.clip_duration((win.end - win.start) / msr):  # the window's length, not the padded one
                waves, hit = self._edit_window(x[win.start:win.end], win, k, len(windows), span, p, music, report,
                                               token, timings, counts)
            cache_hits += hit
            for j, w in enumerate(waves):
                if joined[j] is None:
                    joined[j] = OverlapAdd(total, w.shape[1:])
                joined[j].add(win, w)
            del waves
        del x

        t0 = time.perf_counter()
        takes: list[Take] = []
        fade = round(INPAINT_FADE_S * sr)
        for j, eta in enumerate(p.etas):
            buf, joined[j] = joined[j], None  # each take's buffer is freed once the take is made
            takes.append(Take(float(eta), self._take(buf.out, dc, gain, sr, frames, channels, data, span, fade)))
            del buf
        timings["assemble"] = time.perf_counter() - t0

        trained = p.mode not in ZERO_SHOT_MODES
        recorded = p.to_dict()
        if p.mode == "flowedit":
            recorded["noise_draws"] = self.noise_draws()
        result = EditResult(takes, sr, channels, frames, cache_hit=cache_hits == len(windows) and trained,
                            timings=timings, windows=len(windows), params=recorded, network_calls=counts,
                            notes=notes)
        if self.scorer is not None:
            token.check()
            t0 = time.perf_counter()
            report(Progress("scoring", 0, 1))
            scores = self.scorer.score([t.audio for t in takes], sr, data, p.prompt)
            for take, s in zip(takes, scores, strict=True):
                take.scores = s
            result.pick_best()
            timings["score"] = time.perf_counter() - t0
            report(Progress("scoring", 1, 1))
        return result

    def _model_input(self, data: np.ndarray, sr: int) -> tuple[np.ndarray, float, float]:
        """(what the model hears as float32, dc, gain): the input's channels mapped to the model's, at its rate,
        DC-removed and peak-normalised where the family was trained so. Computed in float64: a source near
        float32's largest value (issue 20) would overflow in its own precision."""
        m = self.model
        heard = to_model_channels(data, m.channels, dtype=np.float64)
        if sr != m.sample_rate:
            heard = soxr.resample(heard, sr, m.sample_rate, quality="VHQ")
        dc, gain = 0.0, 1.0
        if m.input_peak is not None:  # AudioLDM's training normalisation; undone on the way out
            dc = float(heard.mean())
            heard -= dc
            peak = float(np.max(np.abs(heard))) if heard.size else 0.0
            gain = m.input_peak / peak if peak > 1e-6 else 1.0
            heard *= gain
        return heard.astype(np.float32), dc, gain

    def _take(self, joined: np.ndarray, dc: float, gain: float, sr: int, frames: int, channels: int,
              data: np.ndarray, span: _Span | None, fade: int) -> np.ndarray:
        """One take from its joined model-rate output: level restored, at the input's rate, channels and exact
        length, spliced into the input outside an inpainting range; float32. One take at a time, in float64 (the
        gain of a near-overflow source is undone without overflowing)."""
        y = joined.astype(np.float64)
        y /= gain
        y += dc
        if sr != self.model.sample_rate:
            y = soxr.resample(y, self.model.sample_rate, sr, quality="VHQ")
        y = to_input_channels(_fit_length(y, frames), channels)
        if span is not None:
            return _to_float32(splice(data, y, span.start, span.end, fade))
        return _to_float32(y)

    def _inpaint_span(self, p: EditParams, frames: int, sr: int) -> _Span | None:
        if p.inpaint is None:
            return None
        length = frames / sr
        a, b = p.inpaint.start, p.inpaint.end
        if a >= length or b > length + 1.0 / sr:
            raise InputError(f"the inpaint range {a:.3f}-{b:.3f} s lies outside the clip ({length:.3f} s long)")
        start, end = round(a * sr), min(frames, round(b * sr))
        if end <= start:
            raise InputError(f"the inpaint range {a:.3f}-{b:.3f} s is shorter than one sample")
        msr = self.model.sample_rate
        return _Span(start, end, int(start * msr / sr), int(np.ceil(end * msr / sr)))

    def _encode(self, prompt: str, context: PromptContext | None = None) -> tuple[Conditioning, Conditioning]:
        """(target, empty-prompt) conditioning, encoded in one batch as the models' own pipelines do for
        guidance (AudioLDM 2's GPT-2 states depend on the batch's padded length). ``context`` is what else the
        model's text encoding may carry (task, duration, musical context; most families ignore it)."""
        key = (prompt, context or PromptContext())
        if key not in self._prompt_cache:
            if len(self._prompt_cache) > 64:
                self._prompt_cache.clear()
            target, empty = self.model.encode([prompt, ""], key[1]).split([1, 1])
            self._prompt_cache[key] = (target, empty)
        return self._prompt_cache[key]

    def _edit_window(self, seg: np.ndarray, win: Window, k: int, nwin: int, span: _Span | None, p: EditParams,
                     music: MusicContext, report: ProgressFn, token: CancelToken,
                     timings: dict[str, float], counts: dict[str, int]) -> tuple[list[np.ndarray], bool]:
        """Stages 1-3 on one window; returns one model-rate waveform per η and whether the cache was hit."""
        m = self.model
        n = len(seg)
        context = PromptContext(seconds=n / m.sample_rate, music=music)
        e_target, uncond = self._encode(p.prompt, context)
        padded = m.padded_length(n)
        wave = torch.zeros(1, m.channels, padded)
        wave[0, :, :n] = torch.from_numpy(np.ascontiguousarray(seg.reshape(n, -1).T, dtype=np.float32))
        z0 = m.audio_to_latent(wave)
        shape = tuple(z0.shape[1:])
        keep = None
        if span is not None:
            per_latent = padded // z0.shape[2]
            a = max(0, span.model_start - win.start) // per_latent
            b = -(-(min(win.end, span.model_end) - win.start) // per_latent)
            keep = torch.ones(1, 1, z0.shape[2], *([1] * (z0.dim() - 3)), device=m.device, dtype=m.dtype)
            keep[:, :, a:b] = 0
        steps, guidance = int(p.sample_steps or m.default_steps), float(p.guidance or 0.0)
        if steps > m.max_sample_steps:
            raise InputError(f"sampling steps {steps} exceed the model's {m.max_sample_steps}")
        seed = p.seed + 7919 * k

        def stepper(stage: str) -> Callable[[int, int, float | None], None]:
            def on_step(i: int, total: int, loss: float | None) -> None:
                token.check()
                report(Progress(stage, i, total, k, nwin))
            return on_step

        hit = False
        if p.mode in NATIVE_MODES:  # the model's own task (repaint, cover): its conditioning, its sampler
            e_task = self._encode(p.prompt, replace(context, task=p.mode))[0]
            t0 = time.perf_counter()
            with calls.stage(m, "sampling", counts):
                latents = m.native_edit(p.mode, z0, e_task, e_target, uncond, strengths=[float(s) for s in p.etas],
                                        keep=keep, steps=steps, guidance=guidance, seed=seed,
                                        on_step=stepper("sampling"))
            timings["sample"] = timings.get("sample", 0.0) + time.perf_counter() - t0
        elif p.mode == "sdedit":  # every strength in one loop: a take joins the batch at its own start step
            t0 = time.perf_counter()
            with calls.stage(m, "sampling", counts):
                latents = sample(m, [e_target] * len(p.etas), uncond, latent_shape=shape, steps=steps,
                                 guidance=guidance, seed=seed, sampler=p.sampler, z_ref=z0, keep=keep,
                                 strength=[float(s) for s in p.etas], on_step=stepper("sampling"))
            timings["sample"] = timings.get("sample", 0.0) + time.perf_counter() - t0
        elif p.mode == "zeta":
            latents = self._zeta(p, z0, e_target, uncond, steps, guidance, seed, keep, stepper, timings, counts)
        elif p.mode == "flowedit":
            e_src = self._encode(p.source_prompt, context)[0] if p.source_prompt.strip() else None
            t0 = time.perf_counter()
            with calls.stage(m, "sampling", counts):
                latents = flowedit(m, z0, e_src, e_target, uncond, strengths=[float(s) for s in p.etas],
                                   steps=steps, guidance=guidance, source_guidance=float(p.source_guidance),
                                   seed=seed, keep=keep, draws=self.noise_draws(), on_step=stepper("sampling"))
            timings["sample"] = timings.get("sample", 0.0) + time.perf_counter() - t0
        else:
            key = self.stage_cache_key(seg, p, seed, music)
            cached = self.cache.get(key, check=lambda entry: misfit(entry, m.unet, e_target))
            if cached is not None:
                hit = True
                e_opt, tuning = cached[0].to(m.device, m.dtype), cached[1]
            else:
                t0 = time.perf_counter()
                with calls.stage(m, "embedding", counts):
                    e_opt, _ = optimize_embedding(m, z0, e_target, steps=int(p.embed_steps or 0),
                                                  lr=float(p.embed_lr or 0), seed=seed, on_step=stepper("embedding"))
                timings["embedding"] = timings.get("embedding", 0.0) + time.perf_counter() - t0
                t0 = time.perf_counter()
                if p.mode == "full":
                    self.cache.drop_full()  # at most one full UNet state in host RAM besides the pretrained copy
                with calls.stage(m, "finetune", counts):
                    tuning, _ = finetune(m, z0, e_opt, mode=p.mode, steps=int(p.tune_steps or 0),
                                         lr=float(p.tune_lr or 0), rank=p.lora_rank, seed=seed,
                                         draws=int(p.tune_draws or 1), on_step=stepper("finetune"))
                timings["finetune"] = timings.get("finetune", 0.0) + time.perf_counter() - t0
                self.cache.put(key, e_opt, tuning)
            t0 = time.perf_counter()
            conds = [e_opt.lerp(e_target, float(eta)) for eta in p.etas]
            with tuned(m, tuning):
                x_T = None
                if p.start == "inversion":  # on the sampler's own grid: it ends where that sampler starts
                    with calls.stage(m, "inverting", counts):
                        x_T = ddim_invert(m, z0, e_opt, steps=steps, sampler=p.sampler,
                                          on_step=stepper("inverting"))
                with calls.stage(m, "sampling", counts):
                    latents = self._sample_batched(conds, uncond, shape, steps, guidance, seed, p, z0, keep,
                                                   stepper("sampling"), x_T)
            timings["sample"] = timings.get("sample", 0.0) + time.perf_counter() - t0
        token.check()
        t0 = time.perf_counter()
        report(Progress("decoding", 0, 1, k, nwin))
        _check_finite(latents, "latents")
        decoded = m.latent_to_audio(latents)[:, :, :n]
        _check_finite(decoded, "audio")
        decoded = decoded.float().cpu().numpy()  # (takes, C, n), the decoder's float32
        waves = decoded[:, 0] if seg.ndim == 1 else decoded.transpose(0, 2, 1)
        timings["decode"] = timings.get("decode", 0.0) + time.perf_counter() - t0
        report(Progress("decoding", 1, 1, k, nwin))
        return list(waves), hit

    def noise_draws(self) -> int:
        """FlowEdit's noise draws a step: :attr:`flowedit_draws` when set, else the device's (engine.flowedit)."""
        if self.flowedit_draws is not None:
            return int(self.flowedit_draws)
        return default_draws(self.model.device)

    def stage_cache_key(self, seg: np.ndarray, p: EditParams, seed: int, music: MusicContext | None = None) -> str:
        """What stages 1-2 of one window depend on: the model, the audio, the stage parameters, the musical context
        the model's conditioning used (only when there is one), and where and in which precision they ran (a bf16
        or GPU result is not the fp32 CPU one, and vice versa)."""
        m = self.model
        where = {"device": m.device.type, "weights": str(m.weight_dtype or m.dtype).removeprefix("torch."),
                 "dtype": str(m.dtype).removeprefix("torch.")}
        used = {"music": music.to_dict()} if music is not None and music.given() else {}
        return cache_key(m.cache_id or m.name, seg, {**p.stage_key(), "seed": seed, **where, **used})

    def _sample_batched(self, conds: list[Conditioning], uncond: Conditioning, shape: tuple, steps: int,
                        guidance: float, seed: int, p: EditParams, z0: torch.Tensor, keep: torch.Tensor | None,
                        on_step: Callable[[int, int, float | None], None],
                        x_T: torch.Tensor | None = None) -> torch.Tensor:
        """All η in one batch; on a GPU out-of-memory, fall back to one η at a time (same noise, same result)."""
        kwargs = dict(latent_shape=shape, steps=steps, guidance=guidance, seed=seed, sampler=p.sampler,
                      z_ref=z0 if keep is not None else None, keep=keep, x_T=x_T)
        try:
            return sample(self.model, conds, uncond, on_step=on_step, **kwargs)
        except torch.cuda.OutOfMemoryError:
            if len(conds) == 1:
                raise
            torch.cuda.empty_cache()
            log.warning("batched sampling ran out of memory; sampling one η at a time")
            return torch.cat([sample(self.model, [c], uncond, on_step=on_step, **kwargs) for c in conds])


    def _zeta(self, p: EditParams, z0: torch.Tensor, e_target: Conditioning, uncond: Conditioning, steps: int,
              guidance: float, seed: int, keep: torch.Tensor | None, stepper,
              timings: dict[str, float], counts: dict[str, int]) -> torch.Tensor:
        """Zero-shot edit: invert z0 once (edit-friendly DDPM), re-sample all strengths under the prompt (an
        inpainting range is blended with the input's levels; the splice after decoding keeps the audio exact).

        The inversion guides the source prompt with its own scale (ZETA's reference code: source 3, target 12);
        without a source prompt its conditional branch *is* the unconditional one, so it runs that one alone."""
        m = self.model
        t0 = time.perf_counter()
        with calls.stage(m, "inverting", counts):
            if p.source_prompt.strip():
                e_src = self._encode(p.source_prompt)[0]
                maps = extract_noise_maps(m, z0, e_src, uncond, steps=steps, guidance=float(p.source_guidance),
                                          seed=seed, on_step=stepper("inverting"))
            else:
                maps = extract_noise_maps(m, z0, uncond, None, steps=steps, guidance=1.0, seed=seed,
                                          on_step=stepper("inverting"))
        timings["invert"] = timings.get("invert", 0.0) + time.perf_counter() - t0
        t0 = time.perf_counter()
        with calls.stage(m, "sampling", counts):
            latents = zeta_sample(m, maps, e_target, uncond, strengths=[float(s) for s in p.etas],
                                  guidance=guidance, keep=keep, on_step=stepper("sampling"))
        timings["sample"] = timings.get("sample", 0.0) + time.perf_counter() - t0
        return latents


def _check_finite(t: torch.Tensor, what: str) -> None:
    """NotFinite when the model's output holds NaN or Inf: a take made of it would be silence (or noise) marked
    done."""
    if not bool(torch.isfinite(t).all()):
        raise NotFinite(f"the edit produced {what} that are not finite (NaN or Inf): the model's weights or its "
                        "fine-tune diverged; try other steps or learning rates, or reload the model")


def _to_float32(audio: np.ndarray) -> np.ndarray:
    """Samples as float32, clipped to its finite range: undoing the gain of a source with samples near ±3e38
    overflows float32 to ±inf, which would poison the scores and the take (issue 20). In place where it can."""
    limit = float(np.finfo(np.float32).max)
    if audio.dtype == np.float64 and audio.flags.writeable:
        np.clip(audio, -limit, limit, out=audio)
        np.nan_to_num(audio, copy=False, nan=0.0)
        return audio.astype(np.float32)
    return np.nan_to_num(np.clip(audio, -limit, limit), nan=0.0).astype(np.float32)


def _fit_length(y: np.ndarray, frames: int) -> np.ndarray:
    if len(y) >= frames:
        return y[:frames]
    return np.pad(y, [(0, frames - len(y))] + [(0, 0)] * (y.ndim - 1))


def load_editor(model: str = "tiny", device: str | None = None, cache_dir: str | None = None, *,
                scorer: str | None = "auto", allow_download: bool = False, precision: str = "auto",
                compile_unet: bool = False, cache_max_mb: float | None = None) -> Editor:
    """Load a model by name, hub id or folder (see ``engine.models.registry``) and wrap it in an Editor.

    ``precision``/``compile_unet``: see ``engine.precision`` (auto = bf16 weights on a CUDA GPU, fp32 on CPU).
    ``cache_max_mb``: the disk stage cache's cap (None: from the free space, see ``engine.cache_files``).
    ``scorer="auto"`` uses the model's own CLAP where it has one, else ``laion/clap-htsat-unfused`` (a tiny CLAP
    for the tiny model); if those weights are missing the edit still runs and takes carry no scores.
    """
    from engine.devices import resolve_device
    from engine.models.registry import load_model, load_scorer_for

    dev = resolve_device(device)  # auto: CUDA, else Apple's MPS, else the CPU; an absent one fails in one line
    m = load_model(model, device=dev, allow_download=allow_download, precision=precision, compile_unet=compile_unet)
    clap = None
    if scorer is not None:
        clap = load_scorer_for(m, scorer, device=dev, allow_download=allow_download)
    cap = None if cache_max_mb is None else int(cache_max_mb * 1e6)
    cache = StageCache(cache_dir, max_bytes=cap)
    cache.sweep()  # what a killed run left, and the cap (which may have changed since)
    return Editor(m, clap, cache)
