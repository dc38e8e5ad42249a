"""The edit's work in sequential network calls: one per denoiser forward, whatever its batch.

On a GPU the time of an edit is (nearly) the number of sequential UNet calls times the time of one, since a
call is launch-bound up to batches of ~10 (docs/performance.md): 5 η in one batch cost one call, not five. So
the stages count calls, not samples, and results report them per stage (``EditResult.network_calls``).
The count is kept on the model object by the stage functions themselves (outside any compiled graph, so it
adds no guard and no graph break), under the stage the caller names with :func:`stage`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

_ATTR = "_aiedit_calls"


@contextmanager
def stage(model: object, name: str, counts: dict[str, int]) -> Iterator[None]:
    """Count the network calls made inside the block into ``counts[name]`` (added to what is there)."""
    outer = getattr(model, _ATTR, None)
    box = [0]
    setattr(model, _ATTR, box)
    try:
        yield
    finally:
        setattr(model, _ATTR, outer)
        counts[name] = counts.get(name, 0) + box[0]
        if outer is not None:
            outer[0] += box[0]


def tick(model: object) -> None:
    """One sequential network call (called by the stage code next to each denoiser forward)."""
    box = getattr(model, _ATTR, None)
    if box is not None:
        box[0] += 1
