"""How close ``aiedit selftest``'s scaled figures come to a real edit: the self-test's probes, then the full edit of a
10 s clip at the defaults it scaled to, on the same loaded model, in one run.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_selftest [--model tiny toy ...] [--device cpu]

Prints one row per model and mode: probe (measured), estimate (scaled), the real edit (measured) and their ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def rows(model: str, device: str | None) -> list[tuple]:
    from engine.editor import load_editor
    from engine.params import EditParams, EditRequest, Region
    from engine.selftest import ETAS, ITEM_S, PROMPT, make_clip, preview_mode, probe, warm_up, windows_for

    editor = load_editor(model, device=device, scorer=None)
    m = editor.model
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        probe_s = round(min(ITEM_S, m.max_seconds), 2)
        short = make_clip(Path(tmp) / "probe.wav", probe_s)
        item = make_clip(Path(tmp) / "item.wav", ITEM_S)
        warm_up(editor, short, probe_s, preview_mode(m.modes))  # as the self-test does
        for mode in (preview_mode(m.modes), "lora"):
            fig = probe(editor, short, probe_s, mode, windows_for(m, ITEM_S))
            t0 = time.perf_counter()
            result = editor.edit(EditRequest(source=str(item), region=Region(0.0, ITEM_S),
                                             params=EditParams(prompt=PROMPT, etas=ETAS, mode=mode, seed=2)))
            real = time.perf_counter() - t0
            out.append((m.name, mode, fig.probe_s, fig.estimate_s, real, result.windows))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_selftest")
    ap.add_argument("--model", nargs="+", default=["tiny", "toy"])
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"selftest estimate vs a real 10 s edit at the defaults (load {load:.1f}, {os.cpu_count()} CPU threads)")
    print(f"{'model':<8} {'mode':<9} {'probe s':>8} {'estimate s':>11} {'real s':>8} {'windows':>8} "
          f"{'estimate/real':>14}")
    for model in args.model:
        for name, mode, probe_s, est, real, windows in rows(model, args.device):
            print(f"{name:<8} {mode:<9} {probe_s:>8.1f} {est:>11.1f} {real:>8.1f} {windows:>8d} {est / real:>14.2f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
