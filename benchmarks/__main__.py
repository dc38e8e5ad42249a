"""``python -m benchmarks [engine|bridge|scale|all|gpu|preview|window]``: run the benchmarks, print their tables.

``gpu`` (the real-size benchmark, ``benchmarks/gpu.py``) and ``preview`` (the flow previews on a CPU at real size,
``benchmarks/bench_preview.py``) run only when named: they build models of up to 1.3 B parameters; so does
``window`` (peak memory of one long window, one process per length)."""

from __future__ import annotations

import importlib
import sys


def main(argv: list[str]) -> int:
    which = argv[0] if argv else "all"
    names = {"engine": ["benchmarks.bench_engine"], "bridge": ["benchmarks.bench_bridge"],
             "scale": ["benchmarks.bench_scale"]}
    if which == "gpu":
        from benchmarks.gpu import main as gpu_main

        return gpu_main(argv[1:])
    if which == "window":  # one process per length: minutes
        from benchmarks.bench_window import main as window_main

        return window_main(argv[1:])
    if which == "preview":  # real-size SA3 small on the CPU: ≈ 4 GB and minutes, so only when named
        from benchmarks.bench_preview import main as preview_main

        return preview_main(argv[1:])
    modules = names.get(which, [m for ms in names.values() for m in ms])
    for name in modules:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            print(f"(skipping {name}: {exc})")
            continue
        mod.main(argv[1:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
