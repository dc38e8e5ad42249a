"""Edit quality on the toy world: the paper's Table 1 and Fig. 4, measured where the ground truth is known.

    python -m benchmarks.quality [--cases 3] [--threads 1] [--json out.json]

Held-out clips of the procedural world (``toyworld.world``, seeds never used in training) give cases of the
paper's three edit types, each with a target prompt:

- addition: "two knocks" → "two knocks and a bell" (the prompt gives the whole context, as in the paper);
- style transfer: "three knocks" → "three low beeps" (same onsets, other sound);
- inpainting: a clip with a 0.5 s gap over at least one event, prompt = the caption of the complete clip.

Methods on the same cases, all through ``engine.editor.Editor`` on the shipped toy model (``--model toy``):
ours with LoRA, ours with full fine-tuning (η sweep), SDEdit at several strengths, and plain generation from
the target prompt (SDEdit at strength 1; for inpainting that is AudioLDM-style latent-blending inpainting).
Scores are the toy CLAP's (paper §3.2): Text = cos(take, prompt), Audio = cos(take, input). Per case the best
η (strength) is the one with the largest Text + Audio among η > 0 (the paper's rule; η = 0 is no edit). Onset
F1 (50 ms) compares the take's detected onsets with the known onsets of the input's events (style transfer:
input; addition: recall of the input's events, since the added events may fall anywhere; inpainting: the
complete clip's events). "target (oracle)" scores the rendered ground-truth target of each case.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from toyworld import onsets, world
from toyworld.distance import logmel_l1

ETAS = (0.0, 0.25, 0.5, 0.75, 1.0)
STRENGTHS = (0.25, 0.5, 0.75)
STYLE_PAIRS = [("knock", "low_beep"), ("high_beep", "knock"), ("click", "high_beep"), ("low_beep", "burst"),
               ("burst", "click"), ("knock", "high_beep")]
ADD_PAIRS = [("knock", "bell"), ("low_beep", "burst"), ("click", "chirp"), ("high_beep", "knock"),
             ("burst", "high_beep"), ("chirp", "click")]
GAP_S = 0.5


@dataclass
class Case:
    kind: str  # addition | style | inpaint
    name: str
    input: world.Clip
    target: world.Clip  # the ground-truth edit (oracle)
    prompt: str
    ref_onsets: list[float]
    gap: tuple[float, float] | None = None


def make_cases(n: int, base_seed: int = world.HELD_OUT + 50_000) -> list[Case]:
    cases: list[Case] = []
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
        cases.append(Case("addition", f"add{i}", world.render(spec), world.render(tgt), tgt.caption,
                          [e.onset for e in base]))
        # style transfer: same onsets, other class
        a, b = STYLE_PAIRS[i % len(STYLE_PAIRS)]
        base = world.make_events(rng, a, int(rng.integers(2, 5)), [])
        spec = world.ClipSpec(tuple(sorted(base, key=lambda e: e.onset)), bg, 0.2, seed + 1)
        dur = world.CLASSES[b][2]
        moved = [world.Event(b, e.onset, round(min(world.SECONDS, e.onset + dur), 4), e.gain) for e in base]
        tgt = spec.with_events(moved)
        cases.append(Case("style", f"style{i}", world.render(spec), world.render(tgt), tgt.caption,
                          [e.onset for e in base]))
        # inpainting: a gap over one of 3-4 events
        a = ["knock", "high_beep", "low_beep", "click"][i % 4]
        evs = world.make_events(rng, a, int(rng.integers(3, 5)), [])
        spec = world.ClipSpec(tuple(sorted(evs, key=lambda e: e.onset)), bg, 0.2, seed + 2)
        mid = sorted(evs, key=lambda e: e.onset)[len(evs) // 2].onset
        g0 = float(np.clip(mid - 0.15, 0.3, world.SECONDS - GAP_S - 0.1))
        gap = (round(g0, 3), round(g0 + GAP_S, 3))
        full = world.render(spec)
        cases.append(Case("inpaint", f"inpaint{i}", world.render(spec, gap=gap), full, spec.caption,
                          [e.onset for e in evs], gap))
    return cases


def onset_score(case: Case, take: np.ndarray) -> float:
    det = onsets.detect(take)
    f, _, r = onsets.f1(det, case.ref_onsets)
    return r if case.kind == "addition" else f


def run(a: argparse.Namespace) -> dict:
    from engine.editor import load_editor
    from engine.params import EditParams, EditRequest, Inpaint

    torch.set_num_threads(a.threads)
    editor = load_editor(a.model, device="cpu")
    assert editor.scorer is not None, "the toy CLAP is missing"
    cases = make_cases(a.cases)
    methods = {
        "ours (LoRA)": dict(mode="lora", etas=ETAS, tune_steps=a.lora_steps, tune_lr=a.lora_lr,
                            lora_rank=a.lora_rank),
        "ours (full)": dict(mode="full", etas=ETAS, tune_steps=a.full_steps, tune_lr=a.full_lr),
        "SDEdit": dict(mode="sdedit", etas=STRENGTHS),
        "generate": dict(mode="sdedit", etas=(1.0,)),
    }
    for mname, kw in methods.items():
        r = editor.resolve_params(EditParams(prompt="x", **{k: v for k, v in kw.items() if k != "etas"},
                                             embed_steps=a.embed_steps, embed_lr=a.embed_lr,
                                             sample_steps=a.sample_steps, guidance=a.guidance))
        print(f"{mname:12s} stage 1 {r.embed_steps} @ {r.embed_lr:g}; stage 2 {r.tune_steps} @ {r.tune_lr:g}; "
              f"{r.sample_steps} DDIM steps, guidance {r.guidance:g}" if r.mode != "sdedit" else
              f"{mname:12s} {r.sample_steps} DDIM steps, guidance {r.guidance:g}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            path = Path(tmp) / f"{case.name}.wav"
            sf.write(str(path), case.input.wave, world.SR, subtype="FLOAT")
            oracle = editor.scorer.score([case.target.wave], world.SR, case.input.wave, case.prompt)[0]
            rows.append(dict(case=case.name, kind=case.kind, method="target (oracle)", eta=None,
                             text=oracle.text, audio=oracle.audio, onset=onset_score(case, case.target.wave),
                             wall=0.0, recon_l1=None))
            for mname, kw in methods.items():
                p = EditParams(prompt=case.prompt, seed=0, embed_steps=a.embed_steps, embed_lr=a.embed_lr,
                               sample_steps=a.sample_steps, guidance=a.guidance,
                               inpaint=Inpaint(*case.gap) if case.gap else None, **kw)
                t0 = time.perf_counter()
                res = editor.edit(EditRequest(str(path), params=p))
                wall = time.perf_counter() - t0
                for take in res.takes:
                    y = take.audio[:, 0]
                    rows.append(dict(case=case.name, kind=case.kind, method=mname, eta=take.eta,
                                     text=take.scores.text, audio=take.scores.audio, onset=onset_score(case, y),
                                     wall=wall, recon_l1=logmel_l1(y, case.input.wave)))
                print(f"  {case.name:9s} {mname:12s} {wall:6.1f} s  " + "  ".join(
                    f"{t.eta:g}:{t.scores.text:+.2f}/{t.scores.audio:+.2f}" for t in res.takes), flush=True)
    return {"settings": vars(a), "rows": rows}


def summarise(rows: list[dict]) -> str:
    out = []
    kinds = ["addition", "style", "inpaint"]
    methods = ["target (oracle)", "ours (LoRA)", "ours (full)", "SDEdit", "generate"]
    out.append("Best take per case (max Text+Audio over η>0 / strengths), mean over cases")
    out.append(f"{'edit':9s} {'method':16s} {'Sum':>6s} {'Text':>6s} {'Audio':>6s} {'onsetF1':>8s} {'best η':>7s} "
               f"{'wall s':>7s}")
    for k in kinds:
        for m in methods:
            sel = [r for r in rows if r["kind"] == k and r["method"] == m and (r["eta"] is None or r["eta"] > 0)]
            if not sel:
                continue
            best = {}
            for r in sel:
                if r["case"] not in best or r["text"] + r["audio"] > best[r["case"]]["text"] + best[r["case"]]["audio"]:
                    best[r["case"]] = r
            b = list(best.values())

            def mean(key: str, b: list[dict] = b) -> float:
                return float(np.mean([r[key] for r in b]))
            eta = "-" if b[0]["eta"] is None else f"{np.mean([r['eta'] for r in b]):.2f}"
            out.append(f"{k:9s} {m:16s} {mean('text') + mean('audio'):6.3f} {mean('text'):6.3f} {mean('audio'):6.3f} "
                       f"{mean('onset'):8.3f} {eta:>7s} {mean('wall'):7.1f}")
    out.append("")
    out.append("η sweep (Fig. 4), mean over cases: Text / Audio / onsetF1 / log-mel L1 to the input")
    for k in kinds:
        for m in ["ours (LoRA)", "ours (full)", "SDEdit"]:
            etas = sorted({r["eta"] for r in rows if r["kind"] == k and r["method"] == m})
            cells = []
            for e in etas:
                sel = [r for r in rows if r["kind"] == k and r["method"] == m and r["eta"] == e]
                cells.append(f"{e:g}: {np.mean([r['text'] for r in sel]):+.3f}/{np.mean([r['audio'] for r in sel]):.3f}"
                             f"/{np.mean([r['onset'] for r in sel]):.2f}/{np.mean([r['recon_l1'] for r in sel]):.2f}")
            if cells:
                out.append(f"{k:9s} {m:12s} " + "  ".join(cells))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="benchmarks.quality")
    ap.add_argument("--model", default="toy")
    ap.add_argument("--cases", type=int, default=3, help="cases per edit type")
    ap.add_argument("--threads", type=int, default=1)
    # Unset stage settings take the model's own defaults (the toy model's: engine.models.registry.SHIPPED_DEFAULTS).
    ap.add_argument("--embed-steps", type=int, default=None)
    ap.add_argument("--embed-lr", type=float, default=None)
    ap.add_argument("--lora-steps", type=int, default=None)
    ap.add_argument("--lora-lr", type=float, default=None)
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--full-steps", type=int, default=None)
    ap.add_argument("--full-lr", type=float, default=None)
    ap.add_argument("--sample-steps", type=int, default=None)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--json", default=None, help="write every take's scores here")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = run(a)
    print()
    print(summarise(res["rows"]))
    print(f"\ntotal wall {time.perf_counter() - t0:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
