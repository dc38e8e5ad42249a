"""What FlowEdit's cost choices and the flow models' strengths do to the edit, measured on toy-flow (issue 25).

    OMP_NUM_THREADS=1 python -m benchmarks.flow_choices [--cases 12] [--kinds addition,style]
        [--configs paper:28:2,draws1:28:1,grid:cpu:2,cpu:cpu:1] [--strengths 0.25,0.5,0.75,1] [--sdedit]
        [--json PATH] [--from-json PATH ...]

The cases are ``benchmarks.quality``'s (held-out toy-world clips, additions and style transfers with their target
prompts), rendered at the model's rate in stereo. Each ``--configs`` entry ``name:steps:draws`` runs FlowEdit with
that grid (``cpu`` = the CPU default of ``engine.flowedit.default_steps``) and that many noise draws a step, every
strength in one request; ``--sdedit`` adds the model's SDEdit at the same strengths. Per take: the toy CLAP's Text and
Audio, onsets kept (``benchmarks.quality.onset_scores``), and how far the take moved from the input where the DiT
works: ‖z_take − z_input‖ / ‖z_gen − z_input‖ on the latents, z_gen being plain generation from the prompt (SDEdit at
strength 1) — 0 = a copy, 1 = as far as an unrelated take. (The log-mel L1 to the codec's own round trip is given
too, as a ratio of means; the toy codec makes most takes sound alike, so it says less.)

The summary gives, per method and strength, means ± 95 % intervals, and for every config the paired difference
against the first config (same case, same strength, same seed): the quality cost of each choice.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from benchmarks.quality import ci, frames_channels, make_cases, mono16, onset_scores
from toyworld.distance import logmel_l1


def _configs(text: str) -> list[tuple[str, int | None, int]]:
    out = []
    for item in text.split(","):
        name, steps, draws = item.split(":")
        out.append((name, None if steps == "cpu" else int(steps), int(draws)))
    return out


def run(a: argparse.Namespace) -> list[dict]:
    from engine.editor import load_editor
    from engine.params import EditParams, EditRequest

    torch.set_num_threads(a.threads)
    editor = load_editor(a.model, device="cpu")
    model = editor.model
    sr = model.sample_rate
    strengths = tuple(float(x) for x in a.strengths.split(","))
    cases = make_cases(a.cases, kinds=tuple(a.kinds.split(",")), sr=sr, stereo=model.channels == 2)
    # The latents the editor decodes, recorded on the way (an instrument, not a change: the method is called as is),
    # so that movement is measured where the DiT works, not through the toy codec (which makes most takes alike).
    decoded: list[torch.Tensor] = []
    decode = model.latent_to_audio

    def recording(latent: torch.Tensor) -> torch.Tensor:
        decoded.append(latent.detach().clone())
        return decode(latent)
    model.latent_to_audio = recording
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            path = Path(tmp) / f"{case.name}.wav"
            wave = frames_channels(case.input.wave)
            sf.write(path, wave, sr, subtype="FLOAT")
            x = torch.from_numpy(np.ascontiguousarray(wave.T, dtype=np.float32))[None]
            n = x.shape[-1]
            padded = torch.zeros(1, x.shape[1], model.padded_length(n))
            padded[..., :n] = x
            with torch.no_grad():
                z0 = model.audio_to_latent(padded)
                rt = decode(z0)[0, :, :n].numpy().T
            rt16 = mono16(rt, sr)

            def edit(mode: str, etas: tuple[float, ...], steps: int | None = None, draws: int | None = None, *,
                     case=case, path=path):
                editor.flowedit_draws = draws
                p = EditParams(prompt=case.prompt, seed=0, mode=mode, etas=etas, sample_steps=steps)
                t0 = time.perf_counter()
                decoded.clear()
                res = editor.edit(EditRequest(str(path), params=p))
                return res, time.perf_counter() - t0, torch.cat(decoded)

            def dist(z: torch.Tensor, z0: torch.Tensor = z0) -> float:
                return float((z - z0[0]).norm())

            gen, _, zg = edit("sdedit", (1.0,))
            gen_l1, gen_z = logmel_l1(mono16(gen.takes[0].audio, sr), rt16), dist(zg[0])
            methods = [(f"flowedit {name}", "flowedit", steps, draws) for name, steps, draws in _configs(a.configs)]
            if a.sdedit:
                methods.append(("sdedit", "sdedit", None, None))
            for label, mode, steps, draws in methods:
                res, wall, zs = edit(mode, strengths, steps, draws)
                for take, z in zip(res.takes, zs, strict=True):
                    y = mono16(take.audio, sr)
                    kept, added = onset_scores(case, y)
                    rows.append(dict(case=case.name, kind=case.kind, method=label, strength=take.eta,
                                     text=take.scores.text, audio=take.scores.audio, kept=kept, added=added,
                                     l1_rt=logmel_l1(y, rt16), gen_l1=gen_l1, moved=dist(z) / gen_z, wall=wall,
                                     calls=res.network_calls.get("sampling"), steps=res.params["sample_steps"],
                                     draws=res.params.get("noise_draws")))
                print(f"  {case.name:8s} {label:22s} {wall:5.1f} s  " + "  ".join(
                    f"{r['strength']:g}:{r['text']:+.2f}/{r['moved']:.2f}" for r in rows[-len(res.takes):]),
                    flush=True)
            if a.json:
                Path(a.json).write_text(json.dumps({"settings": vars(a), "rows": rows}, indent=1))
    return rows


def _cell(values: list[float]) -> str:
    m, h = ci(values)
    return f"{m:+.2f} ± {h:.2f}" if np.isfinite(h) else f"{m:+.2f}"


def summarise(rows: list[dict]) -> str:
    out = []
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    strengths = sorted({r["strength"] for r in rows})
    ref = methods[0]
    for kind in kinds:
        cases = {r["case"]: r["gen_l1"] for r in rows if r["kind"] == kind}
        gen = float(np.mean(list(cases.values())))
        out.append(f"\n{kind} ({len(cases)} cases): per strength Text / moved (latent) / moved (log-mel: mean L1 to "
                   f"the round trip ÷ generation's {gen:.2f}) / kept F1, means (± 95 %); wall per request, sequential "
                   "calls (grid steps, draws)")
        for m in methods:
            sel = [r for r in rows if r["kind"] == kind and r["method"] == m]
            cells = []
            for s in strengths:
                at = [r for r in sel if r["strength"] == s]
                cells.append(f"{s:g}: {_cell([r['text'] for r in at])} / {_cell([r['moved'] for r in at])} / "
                             f"{np.mean([r['l1_rt'] for r in at]) / gen:.2f} / {np.mean([r['kept'] for r in at]):.2f}")
            one = sel[0]
            walls = [r["wall"] for r in sel[::len(strengths)]]
            out.append(f"  {m:20s} " + "   ".join(cells) + f"   | {np.mean(walls):.1f} s, {one['calls']} calls "
                       f"({one['steps']}, {one['draws'] or '-'})")
        for m in methods[1:]:
            if not m.startswith("flowedit"):
                continue
            cells = []
            for s in strengths:
                pairs = [(r, q) for r in rows if r["kind"] == kind and r["method"] == m and r["strength"] == s
                         for q in rows if q["kind"] == kind and q["method"] == ref and q["strength"] == s
                         and q["case"] == r["case"]]
                cells.append(f"{s:g}: Δtext {_cell([r['text'] - q['text'] for r, q in pairs])}, "
                             f"Δmoved {_cell([r['moved'] - q['moved'] for r, q in pairs])}, "
                             f"Δkept {_cell([r['kept'] - q['kept'] for r, q in pairs])}")
            out.append(f"  {m} − {ref}: " + ";  ".join(cells))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="benchmarks.flow_choices", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="toy-flow")
    ap.add_argument("--cases", type=int, default=12)
    ap.add_argument("--kinds", default="addition,style")
    ap.add_argument("--configs", default="paper:28:2,draws1:28:1,grid:cpu:2,cpu:cpu:1",
                    help="FlowEdit runs, name:steps:draws (steps 'cpu' = the CPU default grid)")
    ap.add_argument("--strengths", default="0.25,0.5,0.75,1")
    ap.add_argument("--sdedit", action="store_true", help="also the model's SDEdit at the same strengths")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--from-json", nargs="+", default=None, help="only summarise earlier --json files")
    a = ap.parse_args(argv)
    if a.from_json:
        rows = [r for f in a.from_json for r in json.loads(Path(f).read_text())["rows"]]
    else:
        t0 = time.perf_counter()
        rows = run(a)
        print(f"\ntotal wall {time.perf_counter() - t0:.0f} s")
    print(summarise(rows))


if __name__ == "__main__":
    main()
