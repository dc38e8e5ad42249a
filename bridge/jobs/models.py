"""The models a daemon offers: its default (``aiedit serve --model``) and the others on disk that a job may name
(``daemon.json``'s ``models``), each with its modes, kind and musical fields, known without torch.

The list is built once, at start, from the model inventory (:mod:`engine.models.inventory`: files read, no weights,
no torch), so the answering thread never scans the disk. What a job may name (docs/protocol.md, "model"):

- a name in the list: the aliases whose files are here and usable (``aiedit models list``), the shipped models,
  the model folders found in the configured model folders (``model_dirs`` in the config file,
  ``$AIEDIT_MODEL_DIRS``) under their folder's name, and the default;
- the hub id of a listed alias;
- a folder, only if it is the folder of a listed model, compared as text (after ``--map-path``): a job can never
  make the daemon load anything its owner did not put in a model folder or name with ``--model``, and naming a path
  probes nothing on disk.

The built-in random-weight models (``tiny``, ``tiny-sa3``, ``tiny-ace``) are listed only when the default is one of
them (a test daemon): a REAPER user never sees models that edit into noise.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

from bridge.jobs.protocol import Job, PathMap, ProtocolError
from engine.memory import ModelMemory, model_memory

log = logging.getLogger("aiedit.service")

MAX_NAMES_SHOWN = 12  # a refusal names at most this many models (one line)


@dataclass(frozen=True)
class Model:
    """One model a job may name: ``name`` (what jobs, statuses and daemon.json say), ``spec`` (what a worker
    loads: an alias, a built-in name or a folder), its family (None when it cannot be told) and folder."""

    name: str
    spec: str
    family: str | None
    folder: str | None = None

    def describe(self) -> dict:
        from engine.models.catalog import describe, strengths_of
        from engine.params import MODES

        out = describe(self.name, self.family)
        if self.family is None:  # cannot be told before it loads: every mode, as the worker will then correct
            out["modes"] = list(MODES)
            out["strengths"] = strengths_of("", MODES)
        return out


class ModelMenu:
    """The default model and the models on disk (see the module doc); thread-safe for reading."""

    def __init__(self, spec: str, found: Iterable[Model] | None = None) -> None:
        self.spec = spec.strip()
        self.default = default_model(self.spec)
        models = list(found) if found is not None else on_disk(with_builtin=self.default.family in _builtin())
        by_name: dict[str, Model] = {self.default.name: self.default}
        for m in models:
            if m.name in by_name:
                if m.name != self.default.name:
                    log.info("model folder %s is listed under an alias of the same name; name its path", m.folder)
                continue
            by_name[m.name] = m
        self.models: tuple[Model, ...] = tuple(by_name.values())  # the default first
        self._by_name = by_name
        self._by_folder: dict[str, Model] = {}
        for m in self.models:
            for f in _folder_forms(m.folder):
                self._by_folder.setdefault(f, m)
        self._info = {m.name: m.describe() for m in self.models}

    # -- what daemon.json says -------------------------------------------------------------------------------

    @property
    def label(self) -> str:
        """The default model's name (``auto`` resolved at start)."""
        return self.default.name

    @property
    def modes(self) -> tuple[str, ...]:
        """The default model's modes (daemon.json's ``modes``)."""
        return tuple(self._info[self.default.name]["modes"])

    def info(self, loaded: Iterable[str] = ()) -> list[dict]:
        """daemon.json's ``models``: the default first, each ``{"name", "kind", "modes", "takes", "strengths",
        "loaded"}``."""
        held = set(loaded)
        return [{**self._info[m.name], "loaded": m.name in held} for m in self.models]

    def loaded(self, name: str, modes: Iterable[str] | None) -> None:
        """A worker loaded ``name``: its own mode list replaces the one known from its name (they agree, except for
        a model whose family could not be told before it loaded)."""
        if name in self._info and modes:
            from engine.models.catalog import strengths_of

            strengths = strengths_of(self.family_of(name) or "", modes)
            self._info[name] = {**self._info[name], "modes": list(modes), "strengths": strengths}

    # -- what a job may name ---------------------------------------------------------------------------------

    def find(self, asked: str | None, path_map: PathMap | None = None) -> Model | None:
        """The listed model ``asked`` names (None: the default), or None when it names none (module doc)."""
        if asked is None or asked.strip() in ("", self.spec):
            return self.default
        a = asked.strip()
        if a in self._by_name:
            return self._by_name[a]
        from engine.models.catalog import ALIASES

        for name, (_, repo) in ALIASES.items():
            if repo == a and name in self._by_name:
                return self._by_name[name]
        if "/" in a or "\\" in a:
            server = (path_map or PathMap()).to_server(a)
            for form in (server, os.path.normpath(server)):
                if form in self._by_folder:
                    return self._by_folder[form]
        return None

    def check(self, job: Job, path_map: PathMap | None = None) -> Job:
        """The job with ``model`` set to the listed name it runs on; ProtocolError (one line) when it names a
        model that is not listed, or a mode that model does not run."""
        m = self.find(job.model, path_map)
        if m is None:
            asked = job.model if len(job.model or "") <= 80 else (job.model or "")[:77] + "..."
            raise ProtocolError(f"model {asked!r} is not one of this engine's models: {self.names_line()}", job.id)
        modes = self._info[m.name]["modes"]
        if job.params.mode not in modes:
            raise ProtocolError(f"model {m.name!r} cannot run mode {job.params.mode!r}: it runs {', '.join(modes)}",
                                job.id)
        return job if job.model == m.name else dataclasses.replace(job, model=m.name)

    def spec_of(self, name: str) -> str:
        """What a worker loads for a listed name (a name not listed is passed on as it is)."""
        m = self._by_name.get(name)
        return m.spec if m is not None else name

    def family_of(self, name: str) -> str | None:
        m = self._by_name.get(name)
        return m.family if m is not None else None

    def memory(self, name: str | None) -> ModelMemory:
        """The memory figures (engine.memory) of a listed model (None: the default), by its name (the shipped toys)
        or family; the largest family's when neither is known."""
        m = self.default if name is None else self._by_name.get(name)
        return model_memory(m.name, m.family) if m is not None else model_memory(None)

    def names_line(self) -> str:
        names = [m.name for m in self.models]
        shown = ", ".join(names[:MAX_NAMES_SHOWN])
        return shown + (f" and {len(names) - MAX_NAMES_SHOWN} more (daemon.json's models)"
                        if len(names) > MAX_NAMES_SHOWN else "")


def default_model(spec: str) -> Model:
    """The model ``aiedit serve --model SPEC`` serves by default, resolved without loading it (``auto`` as
    ``--model auto`` picks). One that cannot be resolved keeps its spec as its name: its jobs fail when the worker
    tries to load it, with the engine's message, as before."""
    try:
        from engine.models.catalog import ALIASES
        from engine.models.registry import resolve, resolve_auto

        picked = resolve_auto()[0] if spec == "auto" else spec
        # a hub id of an alias is that alias (one name, one loaded copy)
        picked = next((alias for alias, (_, repo) in ALIASES.items() if repo == picked), picked)
        r = resolve(picked)
        folder = r.source if os.path.isdir(r.source) else None
        return Model(r.name, picked, r.family, folder)
    except Exception as exc:  # unknown or missing: the worker's load says why, per job
        log.debug("model %s cannot be resolved at start: %s", spec, exc)
        return Model(spec, spec, None, spec if os.path.isdir(spec) else None)


def on_disk(*, with_builtin: bool = False) -> list[Model]:
    """Every usable model on this machine by name (no weights read, no torch): the shipped models, the aliases
    whose files are here, the model folders in the configured folders, and the built-in ones when asked."""
    from engine.models import inventory
    from engine.models.catalog import ALIASES, BUILTIN, SHIPPED

    out: list[Model] = []
    for name, (family, folder) in SHIPPED.items():
        if (folder / "model_index.json").is_file():
            out.append(Model(name, name, family, str(folder)))
    for alias in ALIASES:
        try:
            f = inventory.find_alias(alias)
        except OSError:
            continue
        if f is not None and f.usable:
            out.append(Model(alias, alias, f.family, str(f.folder)))
    try:
        in_dirs = inventory.find_in_dirs()
    except OSError:
        in_dirs = []
    for f in in_dirs:
        if f.usable:
            out.append(Model(f.folder.resolve().name, str(f.folder), f.family, str(f.folder)))
    if with_builtin:
        out += [Model(b, b, b) for b in BUILTIN]
    return out


def _builtin() -> tuple[str, ...]:
    from engine.models.catalog import BUILTIN

    return BUILTIN


def _folder_forms(folder: str | None) -> list[str]:
    """How a job may write a listed model's folder: as found, normalised, and with its links resolved."""
    if not folder:
        return []
    forms = [folder, os.path.normpath(folder)]
    try:
        forms.append(os.path.realpath(folder))
    except OSError:
        pass
    return forms
