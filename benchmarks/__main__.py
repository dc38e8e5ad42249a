"""``python -m benchmarks [engine|bridge|all]``: run the speed benchmarks and print their tables."""

from __future__ import annotations

import importlib
import sys


def main(argv: list[str]) -> int:
    which = argv[0] if argv else "all"
    names = {"engine": ["benchmarks.bench_engine"], "bridge": ["benchmarks.bench_bridge"]}
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
