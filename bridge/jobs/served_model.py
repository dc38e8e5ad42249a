"""The model this daemon serves: the name it was started with, what the worker resolved it to once loaded, and
the edit modes it runs; a job that asks for another model or mode is refused before it is queued."""

from __future__ import annotations

from bridge.jobs.protocol import Job, ProtocolError
from engine.memory import ModelMemory, model_memory


class ServedModel:
    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.name: str | None = None  # resolved by the worker once loaded
        self.modes: tuple[str, ...] = modes_for_spec(spec)  # the selected model's modes; the loaded one's later

    @property
    def label(self) -> str:
        """What statuses and daemon.json name: what ``auto`` resolved to once loaded, else the name given."""
        return self.name or self.spec

    def loaded(self, name: str, modes: tuple[str, ...] | None = None) -> None:
        self.name = name
        if modes:
            self.modes = tuple(modes)

    def check(self, job: Job) -> None:
        """ProtocolError when ``job`` asks for another model, or a mode this one does not run."""
        if job.model is not None and job.model not in (self.spec, self.name):
            asked = job.model if len(job.model) <= 80 else job.model[:77] + "..."
            raise ProtocolError(
                f"this daemon serves model {self.label!r}, the job asks for {asked!r}",
                job.id,
            )
        if job.params.mode not in self.modes:
            raise ProtocolError(
                f"model {self.label!r} cannot run mode {job.params.mode!r}: it runs "
                f"{', '.join(self.modes)}",
                job.id,
            )


def memory_for_spec(spec: str) -> ModelMemory:
    """The memory figures (engine.memory) of the model a daemon was started with, known without loading it: by its
    name (the shipped toys) or family; the largest family's when that cannot be told yet."""
    try:
        from engine.models.registry import resolve

        resolved = resolve(spec)
    except Exception:  # an unknown or missing model fails later, when the worker loads it
        return model_memory(None)
    return model_memory(resolved.name, resolved.family)


def modes_for_spec(spec: str) -> tuple[str, ...]:
    """The edit modes the model a daemon was started with runs, known without loading it (no torch): by the
    family its name, folder or ``auto`` choice resolves to. Every mode when that cannot be told yet (the worker
    replaces the answer with the loaded model's own once it is loaded)."""
    from engine.params import MODES

    try:
        from engine.models.catalog import modes_of_family
        from engine.models.registry import resolve

        return modes_of_family(resolve(spec).family)
    except Exception:  # an unknown or missing model fails later, with its own message, when the worker loads it
        return MODES
