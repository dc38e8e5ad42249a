"""The next step to a first real edit: the best model this machine's memory holds for music and for sound effects,
and the commands that get it and measure it (``aiedit doctor`` prints these lines).

Built on catalog data only, so a family added to the catalog (ACE-Step's music models) takes part without a change
here: every alias with a kind (``catalog.kind_of``) and a memory figure (``catalog.memory_gib``, the ``*_GPU_GIB``
tables). The ranking, per kind: a model made for that kind before a general one, then ``--model auto``'s preference
(family rank, then its order, which puts each family's larger model first). Memory is the device's: free memory of
the first CUDA GPU, the Apple GPU's recommended working set (unified memory), else the RAM (the CPU runs the same
models, slowly). Nothing is loaded or downloaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from engine.models import inventory
from engine.models.catalog import ALIASES, GATED, kind_of, memory_gib

WANTED = ("music", "sound effects")


@dataclass
class Memory:
    device: str  # "cuda" | "mps" | "cpu"
    gib: float
    what: str  # how it was measured, for the line that shows it


def ram_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):  # Windows has no sysconf
        try:
            import ctypes

            class Status(ctypes.Structure):
                _fields_ = [("length", ctypes.c_ulong), ("load", ctypes.c_ulong), ("total", ctypes.c_ulonglong),
                            ("avail", ctypes.c_ulonglong), ("f1", ctypes.c_ulonglong), ("f2", ctypes.c_ulonglong),
                            ("f3", ctypes.c_ulonglong), ("f4", ctypes.c_ulonglong), ("f5", ctypes.c_ulonglong)]

            st = Status()
            st.length = ctypes.sizeof(Status)
            ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(st))  # type: ignore[attr-defined]
            return st.total / 2**30
        except Exception:
            return 0.0


def machine_memory(device: str | None = None) -> Memory:
    """What the device an edit would run on (``engine.devices.resolve_device``) has to hold a model."""
    import torch

    from engine.devices import resolve_device

    dev = resolve_device(device)
    if dev.startswith("cuda"):
        index = int(dev.split(":")[1]) if ":" in dev else 0
        name = torch.cuda.get_device_name(index)
        try:
            free = torch.cuda.mem_get_info(index)[0] / 2**30
        except RuntimeError:
            free = torch.cuda.get_device_properties(index).total_memory / 2**30
        return Memory("cuda", free, f"{free:.1f} GiB free on GPU {index} ({name})")
    if dev == "mps":
        limit = getattr(getattr(torch, "mps", None), "recommended_max_memory", None)
        gib = limit() / 2**30 if callable(limit) else ram_gib() * 2 / 3
        return Memory("mps", gib, f"{gib:.1f} GiB the Apple GPU may use (unified memory)")
    gib = ram_gib()
    return Memory("cpu", gib, f"{gib:.1f} GiB of RAM (no GPU: the CPU runs it, slowly)")


def _rank(name: str) -> tuple[int, int]:
    """``--model auto``'s preference: the family's rank, then the alias's place in AUTO_ORDER."""
    order = inventory.AUTO_ORDER.index(name) if name in inventory.AUTO_ORDER else len(inventory.AUTO_ORDER)
    return inventory.FAMILY_RANK.get(ALIASES[name][0], len(inventory.FAMILY_RANK)), order


def best_for(kind: str, gib: float) -> str | None:
    """The best model for ``kind`` that needs at most ``gib``, or None."""
    fitting = [(name, need) for name in ALIASES if (need := memory_gib(name)) is not None and need <= gib
               and kind_of(name) in (kind, "general")]
    if not fitting:
        return None
    return min(fitting, key=lambda f: (kind_of(f[0]) != kind, _rank(f[0])))[0]


def smallest_for(kind: str) -> tuple[str, float] | None:
    known = [(name, need) for name in ALIASES if (need := memory_gib(name)) is not None
             and kind_of(name) in (kind, "general")]
    return min(known, key=lambda f: (f[1], _rank(f[0]))) if known else None


def next_steps(memory: Memory) -> list[str]:
    """One line per wanted kind (what fits, whether it is here, the command to run next), then a note for CPUs."""
    lines = []
    for kind in WANTED:
        name = best_for(kind, memory.gib)
        if name is None:
            small = smallest_for(kind)
            need = f" (the smallest, {small[0]}, needs ≈{small[1]:.0f} GiB)" if small else ""
            lines.append(f"{kind}: no model aiedit knows fits in {memory.gib:.1f} GiB{need}; the shipped toy model "
                         "runs anywhere: `aiedit selftest --model toy`")
            continue
        found = inventory.find_alias(name)
        head = f"{kind}: {name} (needs ≈{memory_gib(name):.0f} GiB; {memory.what})"
        if found is not None and found.usable:
            lines.append(f"{head}: on this machine — measure it: `aiedit selftest --model {name}`")
        else:
            gated = " (gated: accept its licence first, the pull explains)" if ALIASES[name][1] in GATED else ""
            lines.append(f"{head}: get it with `aiedit models pull {name}`{gated}, then `aiedit selftest --model "
                         f"{name}`")
    if memory.device == "cpu":
        lines.append("no GPU here: a real model's deep edit takes many minutes on a CPU — `aiedit selftest` "
                     "measures how long")
    return lines
