"""Edit quality on the toy world: the paper's Table 1 and Fig. 4, measured where the ground truth is known.

    python -m benchmarks.quality [--cases 12] [--kinds addition,style] [--threads 1] [--json out.json]

Held-out clips of the procedural world (``toyworld.world``, seeds never used in training) give cases of the
paper's three edit types, each with a target prompt:

- addition: "two knocks" → "two knocks and a bell" (the prompt gives the whole context, as in the paper);
- style transfer: "three knocks" → "three low beeps" (same onsets, other sound);
- inpainting: a clip with a 0.5 s gap over at least one event, prompt = the caption of the complete clip.

Methods on the same cases, all through ``engine.editor.Editor`` on the shipped toy model (``--model toy``):
ours with LoRA from fresh noise and from the input's DDIM inversion (the second reuses the first's cached stages
1-2; its wall time adds them back), optionally ours with full fine-tuning (``--full``), the ZETA-style zero-shot
mode, SDEdit at several strengths, and plain generation from the target prompt (SDEdit at strength 1; for
inpainting that is AudioLDM-style latent-blending inpainting). Scores are the toy CLAP's (paper §3.2): Text =
cos(take, prompt), Audio = cos(take, input). Per case the best η (strength) is the one with the largest
Text + Audio among η > 0 (the paper's rule; η = 0 is no edit). Every figure is a mean over cases ± the half-width
of its 95 % t-interval.

Onsets (50 ms, ``toyworld.onsets``), split into what must stay and what must appear:

- kept: style transfer: F1 against the input's onsets (every event is restyled but must keep its time);
  addition: recall of the input's onsets (the added events may fall anywhere, so extra onsets are not errors);
  inpainting: F1 outside the gap against the events outside it.
- added: addition: new onsets (detections > 50 ms from every input onset) per added event, capped at 1;
  inpainting: recall of the missing events' onsets inside the gap; style: none.

"target (oracle)" scores the rendered ground-truth target of each case: the ceiling the VAE-free audio reaches.

On a flow model (``--model toy-flow``, the Stable Audio 3 architecture at 44.1 kHz stereo) the cases are the same
events rendered at the model's rate in stereo (``world.render(..., sr=, stereo=)``), and the methods are the flow
family's: FlowEdit (at the model's guidance and at a higher one), ours with LoRA (fresh-noise start: DDIM inversion
is an ᾱ-schedule tool), SDEdit (the audio-to-audio pipeline's ``init_noise_level``) and generation. Scores and onsets
see every take as the toy CLAP and the onset detector do: averaged to mono, resampled to 16 kHz.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from toyworld import onsets, world
from toyworld.distance import logmel_l1

ETAS = (0.0, 0.25, 0.5, 0.75, 1.0)
STRENGTHS = (0.25, 0.5, 0.75)
ZETA_STRENGTHS = (0.25, 0.5, 0.75, 1.0)
FLOWEDIT_STRENGTHS = (0.25, 0.5, 0.75, 1.0)
STYLE_PAIRS = [("knock", "low_beep"), ("high_beep", "knock"), ("click", "high_beep"), ("low_beep", "burst"),
               ("burst", "click"), ("knock", "high_beep")]
ADD_PAIRS = [("knock", "bell"), ("low_beep", "burst"), ("click", "chirp"), ("high_beep", "knock"),
             ("burst", "high_beep"), ("chirp", "click")]
GAP_S = 0.5
ROUND_TRIP = "round trip"  # the input through the codec alone: what η = 0 can at best give back
TARGET_TRIP = "target through the codec"  # the oracle target through the codec: the Text an edit can at best reach
KINDS = ("addition", "style", "inpaint")
# two-sided 95 % Student t quantiles by degrees of freedom (no scipy here); beyond 30 the normal 1.96 is close
T975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23, 11: 2.20,
        12: 2.18, 13: 2.16, 14: 2.14, 15: 2.13, 16: 2.12, 17: 2.11, 18: 2.10, 19: 2.09, 20: 2.09, 25: 2.06, 30: 2.04}


@dataclass
class Case:
    kind: str  # addition | style | inpaint
    name: str
    input: world.Clip
    target: world.Clip  # the ground-truth edit (oracle)
    prompt: str
    ref_onsets: list[float]  # the input's events that must keep their time
    gap: tuple[float, float] | None = None
    new_onsets: list[float] = field(default_factory=list)  # events the edit must add (oracle positions)


def make_cases(n: int, base_seed: int = world.HELD_OUT + 50_000, kinds: tuple[str, ...] = KINDS, *,
               sr: int = world.SR, stereo: bool = False) -> list[Case]:
    """n cases of each kind; case i of a kind is the same whichever other kinds are asked for, and the same events
    whatever the rate and channel count they are rendered at."""
    cases: list[Case] = []

    def render(spec: world.ClipSpec, gap: tuple[float, float] | None = None) -> world.Clip:
        return world.render(spec, gap=gap, sr=sr, stereo=stereo)

    for i in range(n):
        rng = np.random.default_rng([base_seed, i])
        bg = [None, "hum", None][i % 3]
        seed = int(rng.integers(0, 2**31))
        # addition
        a, b = ADD_PAIRS[i % len(ADD_PAIRS)]
        base = world.make_events(rng, a, int(rng.integers(2, 4)), [])
        added = world.make_events(rng, b, 1 if b == "bell" else 2, [e.onset for e in base])
        spec = world.ClipSpec(tuple(sorted(base, key=lambda e: e.onset)), bg, 0.2, seed)
        tgt = spec.with_events(base + added)
        if "addition" in kinds:
            cases.append(Case("addition", f"add{i}", render(spec), render(tgt), tgt.caption,
                              [e.onset for e in base], new_onsets=[e.onset for e in added]))
        # style transfer: same onsets, other class
        a, b = STYLE_PAIRS[i % len(STYLE_PAIRS)]
        base = world.make_events(rng, a, int(rng.integers(2, 5)), [])
        spec = world.ClipSpec(tuple(sorted(base, key=lambda e: e.onset)), bg, 0.2, seed + 1)
        dur = world.CLASSES[b][2]
        moved = [world.Event(b, e.onset, round(min(world.SECONDS, e.onset + dur), 4), e.gain) for e in base]
        tgt = spec.with_events(moved)
        if "style" in kinds:
            cases.append(Case("style", f"style{i}", render(spec), render(tgt), tgt.caption,
                              [e.onset for e in base]))
        # inpainting: a gap over one of 3-4 events
        a = ["knock", "high_beep", "low_beep", "click"][i % 4]
        evs = world.make_events(rng, a, int(rng.integers(3, 5)), [])
        spec = world.ClipSpec(tuple(sorted(evs, key=lambda e: e.onset)), bg, 0.2, seed + 2)
        mid = sorted(evs, key=lambda e: e.onset)[len(evs) // 2].onset
        g0 = float(np.clip(mid - 0.15, 0.3, world.SECONDS - GAP_S - 0.1))
        gap = (round(g0, 3), round(g0 + GAP_S, 3))
        if "inpaint" in kinds:
            inside = [e.onset for e in evs if gap[0] <= e.onset < gap[1]]
            cases.append(Case("inpaint", f"inpaint{i}", render(spec, gap), render(spec),
                              spec.caption, [e.onset for e in evs if e.onset not in inside], gap, inside))
    return cases


def mono16(wave: np.ndarray, sr: int) -> np.ndarray:
    """A take or clip as the onset detector and the log-mel distance read it: mono, 16 kHz. ``wave`` is (n,),
    (channels, n) as the world renders it, or (n, channels) as takes come."""
    x = np.asarray(wave, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=0 if x.shape[0] <= 2 < x.shape[1] else 1)
    return x if sr == world.SR else soxr.resample(x, sr, world.SR).astype(np.float32)


def frames_channels(wave: np.ndarray) -> np.ndarray:
    """A world clip as soundfile and the scorer take it: (n,) or (n, channels)."""
    return wave.T if wave.ndim == 2 else wave


def onset_scores(case: Case, take: np.ndarray) -> tuple[float, float | None]:
    """(kept, added) as the module docstring defines them (take: mono 16 kHz); added is None for style transfer."""
    tol = onsets.TOLERANCE_S
    det = onsets.detect(take)
    if case.kind == "addition":
        new = [d for d in det if all(abs(d - r) > tol for r in case.ref_onsets)]
        return onsets.f1(det, case.ref_onsets)[2], min(1.0, len(new) / max(1, len(case.new_onsets)))
    if case.kind == "style":
        return onsets.f1(det, case.ref_onsets)[0], None
    assert case.gap is not None
    g0, g1 = case.gap
    outside = [d for d in det if not g0 - tol <= d < g1 + tol]
    inside = [d for d in det if g0 - tol <= d < g1 + tol]
    return onsets.f1(outside, case.ref_onsets)[0], onsets.f1(inside, case.new_onsets)[2]


def methods_for(a: argparse.Namespace, modes: tuple[str, ...] = ("lora", "full", "sdedit", "zeta")) -> dict[str, dict]:
    """The rows for a model that runs ``modes`` (a flow model: FlowEdit instead of ZETA, no inverted start)."""
    lora = dict(mode="lora", etas=ETAS, tune_steps=a.lora_steps, tune_lr=a.lora_lr, tune_draws=a.lora_draws,
                lora_rank=a.lora_rank, sampler=a.sampler)
    if "flowedit" in modes:
        fe = dict(mode="flowedit", etas=FLOWEDIT_STRENGTHS)
        if a.flowedit_steps is not None:  # else FlowEdit's default for the device (engine.flowedit)
            fe["sample_steps"] = a.flowedit_steps
        m = {"flowedit": fe, f"flowedit (guidance {a.zeta_guidance:g})": {**fe, "guidance": a.zeta_guidance},
             "ours (LoRA)": lora}
        if a.full:
            m["ours (full)"] = dict(mode="full", etas=ETAS, tune_steps=a.full_steps, tune_lr=a.full_lr)
        m.update({"SDEdit": dict(mode="sdedit", etas=STRENGTHS), "generate": dict(mode="sdedit", etas=(1.0,))})
    else:
        m = {"ours (LoRA)": lora, "ours (LoRA, inverted)": {**lora, "start": "inversion"}}
        if a.full:
            full = dict(mode="full", etas=ETAS, tune_steps=a.full_steps, tune_lr=a.full_lr)
            m.update({"ours (full)": full, "ours (full, inverted)": {**full, "start": "inversion"}})
        m.update({"zeta": dict(mode="zeta", etas=ZETA_STRENGTHS),
                  # ZETA's reference settings steer the target far harder than our samplers' default guidance
                  f"zeta (guidance {a.zeta_guidance:g})": dict(mode="zeta", etas=ZETA_STRENGTHS,
                                                               guidance=a.zeta_guidance),
                  "SDEdit": dict(mode="sdedit", etas=STRENGTHS),
                  "generate": dict(mode="sdedit", etas=(1.0,))})
    for v in (a.sample_variants.split(",") if a.sample_variants else []):
        kind, steps = v.split(":")  # the LoRA row again with another sampler: a re-take from the stage cache
        m[f"ours (LoRA; {kind} {steps})"] = {**lora, "sampler": kind, "sample_steps": int(steps)}
    # the codec alone (audio → latent → audio): the ceiling of every take's Audio, and what η = 0 should reach
    m[ROUND_TRIP] = dict(mode=ROUND_TRIP)
    if a.methods:
        wanted = [x.strip() for x in a.methods.split(",")]
        unknown = [x for x in wanted if x not in m]
        if unknown:
            raise SystemExit(f"unknown method(s) {unknown}: choose from {list(m)}")
        m = {k: v for k, v in m.items() if k in wanted}
    if a.tag:  # one run per configuration; the tag keeps their rows apart when several JSON files are summarised
        m = {f"{k} [{a.tag}]": v for k, v in m.items()}
    return m


def run(a: argparse.Namespace) -> dict:
    from engine.editor import load_editor
    from engine.params import EditParams, EditRequest, Inpaint

    torch.set_num_threads(a.threads)
    editor = load_editor(a.model, device="cpu")
    assert editor.scorer is not None, "the toy CLAP is missing"
    editor.flowedit_draws = a.flowedit_draws
    model = editor.model
    if a.flow_sigma != "uniform":  # the flow stages' training σ draw (engine review finding 5)
        model.schedule.training_sigma = a.flow_sigma
    sr, stereo = model.sample_rate, getattr(model, "channels", 1) == 2
    cases = make_cases(a.cases, kinds=tuple(a.kinds.split(",")), sr=sr, stereo=stereo)
    cases = [c for c in cases if int(c.name.lstrip("adinpstyle")) >= a.first]  # add3, style3, inpaint3 → 3
    methods = methods_for(a, tuple(getattr(model, "modes", ("lora", "full", "sdedit", "zeta"))))
    for mname, kw in methods.items():
        if kw["mode"] == ROUND_TRIP:
            continue
        r = editor.resolve_params(EditParams(prompt="x", **{"guidance": a.guidance, "sample_steps": a.sample_steps,
                                                            **kw, "etas": (0.5,)},
                                             embed_steps=a.embed_steps, embed_lr=a.embed_lr))
        print(f"{mname:22s} stage 1 {r.embed_steps} @ {r.embed_lr:g}; stage 2 {r.tune_steps} × {r.tune_draws} draws "
              f"@ {r.tune_lr:g}; {r.sample_steps} {r.sampler} steps, guidance {r.guidance:g}"
              if r.mode in ("lora", "full") else
              f"{mname:22s} {r.sample_steps} {r.sampler} steps, guidance {r.guidance:g}", flush=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            path = Path(tmp) / f"{case.name}.wav"
            sf.write(str(path), frames_channels(case.input.wave), sr, subtype="FLOAT")
            ref16 = mono16(case.input.wave, sr)
            oracle = editor.scorer.score([frames_channels(case.target.wave)], sr, frames_channels(case.input.wave),
                                         case.prompt)[0]
            kept, added = onset_scores(case, mono16(case.target.wave, sr))
            rows.append(dict(case=case.name, kind=case.kind, method="target (oracle)", eta=None, text=oracle.text,
                             audio=oracle.audio, kept=kept, added=added, wall=0.0, recon_l1=None))
            stage12: dict[str, float] = {}
            for mname, kw in methods.items():
                if kw["mode"] == ROUND_TRIP:  # the input through the codec, and the oracle target through it
                    for clip, label in ((case.input, mname), (case.target, mname.replace(ROUND_TRIP, TARGET_TRIP))):
                        t0 = time.perf_counter()
                        y = round_trip(model, clip.wave)
                        wall = time.perf_counter() - t0
                        s = editor.scorer.score([frames_channels(y)], sr, frames_channels(case.input.wave),
                                                case.prompt)[0]
                        kept, added = onset_scores(case, mono16(y, sr))
                        rows.append(dict(case=case.name, kind=case.kind, method=label, eta=None, text=s.text,
                                         audio=s.audio, kept=kept, added=added, wall=wall,
                                         recon_l1=logmel_l1(mono16(y, sr), ref16)))
                        print(f"  {case.name:9s} {label:22s} {wall:6.1f} s  {s.text:+.2f}/{s.audio:+.2f}", flush=True)
                    continue
                p = EditParams(prompt=case.prompt, seed=0, embed_steps=a.embed_steps, embed_lr=a.embed_lr,
                               inpaint=Inpaint(*case.gap) if case.gap else None,
                               **{"guidance": a.guidance, "sample_steps": a.sample_steps, **kw})
                t0 = time.perf_counter()
                res = editor.edit(EditRequest(str(path), params=p))
                wall = time.perf_counter() - t0
                kind = kw["mode"]
                if res.cache_hit:  # a re-take on the other start: count the stages it reused
                    wall += stage12.get(kind, 0.0)
                else:
                    stage12[kind] = res.timings.get("embedding", 0.0) + res.timings.get("finetune", 0.0)
                for take in res.takes:
                    y = mono16(take.audio, sr)
                    kept, added = onset_scores(case, y)
                    rows.append(dict(case=case.name, kind=case.kind, method=mname, eta=take.eta,
                                     text=take.scores.text, audio=take.scores.audio, kept=kept, added=added,
                                     wall=wall, recon_l1=logmel_l1(y, ref16),
                                     network_calls=res.network_calls))
                print(f"  {case.name:9s} {mname:22s} {wall:6.1f} s  " + "  ".join(
                    f"{t.eta:g}:{t.scores.text:+.2f}/{t.scores.audio:+.2f}" for t in res.takes), flush=True)
            if a.json:  # after every case, so a run cut short still leaves its rows
                Path(a.json).write_text(json.dumps({"settings": vars(a), "rows": rows}, indent=1))
    return {"settings": vars(a), "rows": rows}


@torch.no_grad()
def round_trip(model, wave: np.ndarray) -> np.ndarray:
    """The model's codec alone on a world clip ((n,) or (channels, n) at the model's rate): encode, decode, same
    shape back. No edit, no sampling: what the codec costs every take."""
    x = torch.from_numpy(np.asarray(wave, dtype=np.float32))
    x = x.reshape(1, -1, x.shape[-1])
    n = x.shape[-1]
    x = torch.nn.functional.pad(x, (0, model.padded_length(n) - n))
    y = model.latent_to_audio(model.audio_to_latent(x.to(model.device)))[:, :, :n].float().cpu().numpy()
    return y[0].reshape(np.shape(wave))


def ci(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of the two-sided 95 % Student t interval); half-width nan for one value."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x.mean()), math.nan
    dof = len(x) - 1
    t = 1.96 if dof > 30 else T975[max(k for k in T975 if k <= dof)]
    return float(x.mean()), float(t * x.std(ddof=1) / math.sqrt(len(x)))


def fmt(values: list[float | None], width: int = 12) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return f"{'-':>{width}s}"
    m, h = ci(vals)
    return f"{m:.2f} ± {h:.2f}".rjust(width) if not math.isnan(h) else f"{m:.2f}".rjust(width)


def best_per_case(rows: list[dict], kind: str, method: str) -> list[dict]:
    """The take each case would pick: max Text + Audio over η > 0 (the paper's rule)."""
    best: dict[str, dict] = {}
    for r in rows:
        if r["kind"] != kind or r["method"] != method or (r["eta"] is not None and r["eta"] <= 0):
            continue
        if r["case"] not in best or r["text"] + r["audio"] > best[r["case"]]["text"] + best[r["case"]]["audio"]:
            best[r["case"]] = r
    return list(best.values())


def paired(rows: list[dict], kind: str, method: str, a: float, b: float, key: str) -> tuple[float, float, int]:
    """Mean and 95 % half-width of ``key`` at η = b minus η = a, paired by case (only cases that have both)."""
    at = {e: {r["case"]: r[key] for r in rows if r["kind"] == kind and r["method"] == method and r["eta"] == e}
          for e in (a, b)}
    common = sorted(set(at[a]) & set(at[b]))
    m, h = ci([at[b][c] - at[a][c] for c in common]) if common else (math.nan, math.nan)
    return m, h, len(common)


def paired_methods(rows: list[dict], kind: str, a: str, b: str, key: str) -> tuple[float, float, int]:
    """Mean and 95 % half-width of ``key`` of method ``b`` minus method ``a`` (names by prefix), paired by case."""
    at = {m: {r["case"]: r[key] for r in rows if r["kind"] == kind and r["method"].startswith(m)} for m in (a, b)}
    common = sorted(set(at[a]) & set(at[b]))
    m_, h = ci([at[b][c] - at[a][c] for c in common]) if common else (math.nan, math.nan)
    return m_, h, len(common)


def sweep_check(rows: list[dict], kinds: list[str]) -> list[str]:
    """The three-stage edit's η sweep against what the paper shows (Fig. 4): η = 0 gives the input back (its Audio
    inside the codec round trip's interval, or above it) and Text rises with η (Text at η = 1 minus Text at η = 0,
    paired by case, larger than its own interval)."""
    out = ["", "η sweep with 95 % intervals (three-stage rows): Text and Audio at η = 0 and 1; "
           "ΔText = Text(1) − Text(0) paired by case; η = 0 Audio against the codec round trip's"]
    for k in kinds:
        rt = [r["audio"] for r in rows if r["kind"] == k and r["method"].startswith(ROUND_TRIP)]
        ceiling = [r for r in rows if r["kind"] == k and r["method"].startswith(TARGET_TRIP)]
        if ceiling and rt:
            d, h, n = paired_methods(rows, k, ROUND_TRIP, TARGET_TRIP, "text")
            out.append(f"{k:9s} through the codec: Text of the target − Text of the input {d:+.2f} ± {h:.2f} "
                       f"({n} cases): the most any edit's ΔText can show here")
        rt_m, rt_h = ci(rt) if rt else (math.nan, math.nan)
        for m in dict.fromkeys(r["method"] for r in rows):
            sel = [r for r in rows if r["kind"] == k and r["method"] == m]
            if not any(r["eta"] == 0.0 for r in sel) or not any(r["eta"] == 1.0 for r in sel):
                continue
            cell = {e: (fmt([r["text"] for r in sel if r["eta"] == e], 0), fmt([r["audio"] for r in sel
                                                                             if r["eta"] == e], 0))
                    for e in (0.0, 1.0)}
            d, h, n = paired(rows, k, m, 0.0, 1.0, "text")
            a0 = ci([r["audio"] for r in sel if r["eta"] == 0.0])[0]
            back = ("no round trip row" if not rt else
                    f"η = 0 Audio {a0:.2f} vs round trip {rt_m:.2f} ± {rt_h:.2f}: "
                    + ("inside" if abs(a0 - rt_m) <= rt_h else "above" if a0 > rt_m else "below"))
            rises = "rises" if d - h > 0 else "does not rise"
            out.append(f"{k:9s} {m:22s} η=0 Text {cell[0.0][0]} Audio {cell[0.0][1]}; η=1 Text {cell[1.0][0]} "
                       f"Audio {cell[1.0][1]}; ΔText {d:+.2f} ± {h:.2f} ({n} cases: {rises}); {back}")
    return out


def summarise(rows: list[dict]) -> str:
    out = []
    kinds = [k for k in KINDS if any(r["kind"] == k for r in rows)]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    n = {k: len({r["case"] for r in rows if r["kind"] == k}) for k in kinds}
    out.append("Best take per case (max Text+Audio over η>0 / strengths): mean ± 95 % interval over "
               + ", ".join(f"{n[k]} {k}" for k in kinds) + " cases")
    out.append(f"{'edit':9s} {'method':22s} {'Sum':>12s} {'Text':>12s} {'Audio':>12s} {'kept F1':>12s} "
               f"{'added':>12s} {'best η':>7s} {'wall s':>7s}")
    for k in kinds:
        for m in methods:
            b = best_per_case(rows, k, m)
            if not b:
                continue
            eta = "-" if b[0]["eta"] is None else f"{np.mean([r['eta'] for r in b]):.2f}"
            out.append(f"{k:9s} {m:22s} {fmt([r['text'] + r['audio'] for r in b])} {fmt([r['text'] for r in b])} "
                       f"{fmt([r['audio'] for r in b])} {fmt([r['kept'] for r in b])} {fmt([r['added'] for r in b])} "
                       f"{eta:>7s} {np.mean([r['wall'] for r in b]):7.1f}")
    out.append("")
    out.append("η / strength sweep (Fig. 4), mean over cases: Text / Audio / kept F1 / log-mel L1 to the input")
    for k in kinds:
        for m in methods:
            if m in ("target (oracle)", "generate") or m.startswith((ROUND_TRIP, TARGET_TRIP)):
                continue
            etas = sorted({r["eta"] for r in rows if r["kind"] == k and r["method"] == m})
            cells = []
            for e in etas:
                sel = [r for r in rows if r["kind"] == k and r["method"] == m and r["eta"] == e]
                cells.append(f"{e:g}: {np.mean([r['text'] for r in sel]):+.2f}/{np.mean([r['audio'] for r in sel]):.2f}"
                             f"/{np.mean([r['kept'] for r in sel]):.2f}/{np.mean([r['recon_l1'] for r in sel]):.2f}")
            if cells:
                out.append(f"{k:9s} {m:22s} " + "  ".join(cells))
    out += sweep_check(rows, kinds)
    out.append("")
    out.append("The bar (issues 12, 16): kept F1 ≥ 0.8 and Text ≥ SDEdit's + 0.2 at the picked take (additions, "
               "style); for FlowEdit also ≤ 1/10 of the LoRA edit's wall time")
    for k in [k for k in kinds if k != "inpaint"]:
        sd = best_per_case(rows, k, "SDEdit")
        if not sd:
            continue
        sd_text = float(np.mean([r["text"] for r in sd]))
        for m in [m for m in methods if m not in ("target (oracle)", "SDEdit", "generate")
                  and not m.startswith((ROUND_TRIP, TARGET_TRIP))]:
            b = best_per_case(rows, k, m)
            kept, text = ci([r["kept"] for r in b]), ci([r["text"] for r in b])
            ok = kept[0] >= 0.8 and text[0] >= sd_text + 0.2
            speed = ""
            lora = best_per_case(rows, k, "ours (LoRA)")
            if m.startswith("flowedit") and lora:
                ratio = np.mean([r["wall"] for r in b]) / np.mean([r["wall"] for r in lora])
                ok = ok and ratio <= 0.1
                speed = f", wall {ratio:.3f} × LoRA's"
            out.append(f"{k:9s} {m:22s} kept {kept[0]:.2f} ± {kept[1]:.2f}, Text − SDEdit's "
                       f"{text[0] - sd_text:+.2f}{speed}: {'met' if ok else 'not met'}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="benchmarks.quality")
    ap.add_argument("--model", default="toy", help="toy (AudioLDM, 16 kHz mono) or toy-flow (SA3, 44.1 kHz stereo)")
    ap.add_argument("--cases", type=int, default=12, help="cases per edit type")
    ap.add_argument("--kinds", default="addition,style,inpaint", help="comma-separated edit types to run")
    ap.add_argument("--first", type=int, default=0,
                    help="skip the first cases of each type (to extend an earlier run: same cases, same seeds)")
    ap.add_argument("--full", action="store_true", help="also full fine-tuning (≈ 40 s more per case on a CPU)")
    ap.add_argument("--threads", type=int, default=1)
    # Unset stage settings take the model's own defaults (the toy model's: engine.models.registry.SHIPPED_DEFAULTS).
    ap.add_argument("--embed-steps", type=int, default=None)
    ap.add_argument("--embed-lr", type=float, default=None)
    ap.add_argument("--lora-steps", type=int, default=None)
    ap.add_argument("--lora-lr", type=float, default=None)
    ap.add_argument("--lora-draws", type=int, default=None, help="stage-2 noise draws per step (batch)")
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--full-steps", type=int, default=None)
    ap.add_argument("--full-lr", type=float, default=None)
    ap.add_argument("--sample-steps", type=int, default=None)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--sampler", default="ddim", choices=("ddim", "dpm"), help="stage-3 sampler of the LoRA rows")
    ap.add_argument("--flow-sigma", default="uniform", choices=("uniform", "logsnr"),
                    help="flow models: the training σ of stages 1-2, U(0, 1) or uniform in the sampler's log-SNR range")
    ap.add_argument("--sample-variants", default=None,
                    help="extra LoRA rows with other stage-3 samplers, e.g. ddim:8,dpm:25 (they reuse the cached "
                         "stages 1-2: wall = sampling only)")
    ap.add_argument("--methods", default=None, help="comma-separated method names to run (default: all)")
    ap.add_argument("--tag", default=None, help="appended to every method name, e.g. the configuration's name")
    ap.add_argument("--zeta-guidance", type=float, default=7.5,
                    help="guidance of the second zeta (flow models: FlowEdit) row")
    ap.add_argument("--flowedit-steps", type=int, default=None,
                    help="FlowEdit's grid steps (default: the device's, engine.flowedit: 28 on CUDA; on a CPU the grid "
                         "on which the strongest take runs 6 steps)")
    ap.add_argument("--flowedit-draws", type=int, default=None,
                    help="FlowEdit's noise draws a step (default: the device's: 2 on CUDA, 1 on a CPU)")
    ap.add_argument("--json", default=None, help="write every take's scores here")
    ap.add_argument("--from-json", nargs="+", default=None,
                    help="only summarise rows written by earlier --json runs (several files: their rows together)")
    a = ap.parse_args(argv)
    if a.from_json:
        rows = [r for f in a.from_json for r in json.loads(Path(f).read_text())["rows"]]
        seen: set[tuple] = set()  # the oracle rows repeat in every file
        unique = [r for r in rows if (key := (r["case"], r["method"], r["eta"])) not in seen and not seen.add(key)]
        print(summarise(unique))
        return
    t0 = time.perf_counter()
    res = run(a)
    print()
    print(summarise(res["rows"]))
    print(f"\ntotal wall {time.perf_counter() - t0:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
