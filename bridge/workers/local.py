"""A worker thread: loads each job's model on first need (keeping several, :mod:`bridge.workers.loaded`), runs
jobs one at a time, writes takes into the spool.

One thread per device because one model on one device runs one edit at a time; the queue decides the order and
:mod:`bridge.workers.pool` which free worker takes which job. Models are loaded here, never on the answering path:
``engine.load_editor`` imports torch and diffusers (seconds), and the daemon must answer ping within a second of
starting.
"""

from __future__ import annotations

import gc
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from bridge.jobs.protocol import Job, take_name
from bridge.jobs.service import Service
from bridge.workers.loaded import LoadedModels, default_max_models, free_gib
from bridge.workers.pool import LOAD_LOCK, Pool, Slot, worker_names
from engine.errors import Cancelled, EngineError, ModelUnavailable
from engine.params import ZERO_SHOT_MODES, EditParams
from engine.progress import CancelToken, Progress

log = logging.getLogger("aiedit.worker")

# Shares of the whole job's progress bar for the fixed-cost stages; the step-driven stages share the rest.
LOADING, PREPARING, SCORING, WRITING = 0.10, 0.03, 0.04, 0.03
WINDOW_STAGES = ("embedding", "finetune", "inverting", "sampling", "decoding")


class ProgressMap:
    """Maps the engine's per-stage :class:`Progress` to one never-decreasing fraction for the whole job.

    The engine runs embedding → finetune → (inverting) → sampling → decoding per window (long clips are edited
    in windows), preceded by ``preparing`` and followed by ``scoring``. Step-driven stages are weighted by their step
    counts (a fine-tuning step costs about 1.5 embedding steps, a sampling step about 0.7 per η); stages
    skipped by a cache hit just make the bar jump. Every stage's (step, total) runs once from 1 to its total, SDEdit's
    several strengths included (the engine counts their loops as one: issue 25; the bar stalled at 1/n on a model
    whose strengths share one loop).
    """

    def __init__(self, params: EditParams, *, loading: bool) -> None:
        p = params  # resolved: every step count filled in
        n = len(p.etas)
        self.loading = LOADING if loading else 0.0
        zero_shot = p.mode in ZERO_SHOT_MODES
        tune_steps = 0 if zero_shot else int(p.tune_steps or 0)
        embed_steps = 0 if zero_shot else int(p.embed_steps or 0)
        sample_cost = (p.sample_steps or 50) * n * 0.7
        inverts = p.mode == "zeta" or (not zero_shot and p.start == "inversion")  # one unbatched pass
        costs = {"embedding": float(embed_steps), "finetune": tune_steps * 1.5,
                 "inverting": (p.sample_steps or 50) * 0.7 if inverts else 0.0, "sampling": sample_cost}
        costs["decoding"] = 0.03 * sum(costs.values()) + 1e-9
        total = sum(costs.values())
        self.share = {k: v / total for k, v in costs.items()}
        self.offset, acc = {}, 0.0
        for k in WINDOW_STAGES:
            self.offset[k] = acc
            acc += self.share[k]
        self.core = 1.0 - self.loading - PREPARING - SCORING - WRITING

    def loaded(self) -> float:
        return self.loading

    def writing(self) -> float:
        return 1.0 - WRITING

    def __call__(self, pr: Progress) -> tuple[str, float]:
        f = min(1.0, max(0.0, pr.fraction))
        if pr.stage == "preparing":
            return "preparing", self.loading + PREPARING * f
        if pr.stage == "scoring":
            return "scoring", self.loading + PREPARING + self.core + SCORING * f
        if pr.stage not in self.share:
            return pr.stage, 0.0  # unknown stage: name passes, the bar holds (progress is kept monotone)
        window, stage = pr.window, pr.stage
        within = self.offset[stage] + self.share[stage] * f
        windows = max(1, pr.windows)
        return stage, self.loading + PREPARING + self.core * (window + within) / windows


class Worker(threading.Thread):
    """One device's worker. ``model`` is the daemon's ``--model`` (its default); a job may name another model the
    daemon lists (:mod:`bridge.jobs.models`), and the worker keeps up to ``max_models`` loaded
    (:mod:`bridge.workers.loaded`: least recently used evicted first; None = from the free memory)."""

    def __init__(
        self,
        service: Service,
        model: str,
        *,
        device: str | None = None,
        cache_dir: str | None = None,
        preload: bool = False,
        threads: int | None = None,
        precision: str = "auto",
        compile_unet: bool = False,
        pool: Pool | None = None,
        slot: Slot | None = None,
        max_models: int | None = None,
        cache_max_mb: float | None = None,
    ) -> None:
        super().__init__(name="aiedit-worker", daemon=True)
        if pool is None or slot is None:  # a lone worker
            pool = Pool()
            slot = pool.add(worker_names([device])[0])
        self.pool, self.slot = pool, slot
        self.threads = threads
        self.precision, self.compile_unet = precision, compile_unet
        self.service, self.model, self.device, self.cache_dir = service, model, device, cache_dir
        self.preload = preload
        self.cache_max_mb = cache_max_mb
        self.models = LoadedModels(self._load, limit=max_models, default_limit=self._default_limit,
                                   on_evict=self._evicted, on_change=lambda names: pool.set_models(slot, names))
        self._stage_cache: Any = None  # the first editor's stage cache, shared by every model this worker loads

    def run(self) -> None:
        if self.preload:
            default = self.service.models.label
            try:
                self.models.acquire(default)
                self.models.release(default)
            except EngineError as exc:
                log.error("preloading failed on %s: %s", self.slot.name, exc)
        self.pool.set_state(self.slot, "idle")
        choose = self.pool.chooser(self.slot)
        while not self.service.closed.is_set():
            item = self.service.next_job(0.5, self.slot.name, choose)
            if item is not None:
                self._run_job(*item)
            self.pool.release(self.slot)

    def _default_limit(self) -> int:
        """``--max-models`` unset: as many of the listed models as the free memory holds (bridge.workers.loaded)."""
        self._set_up_torch()
        menu = self.service.models
        free = free_gib(self.device or _default_device())
        n = default_max_models(free, [(m.name, m.family) for m in menu.models],
                               gpu=(self.device or _default_device()).startswith("cuda"), precision=self.precision)
        log.info("%s: %s GiB free: room for %d model(s) at once (aiedit serve --max-models to choose)",
                 self.slot.name, "?" if free is None else f"{free:.1f}", n)
        return n

    def _set_up_torch(self) -> None:
        if self.threads:  # torch is imported here anyway (by load_editor), on this thread only
            import torch

            torch.set_num_threads(self.threads)
        if self.device and self.device.startswith("cuda:"):
            import torch

            # the current CUDA device is per thread: unqualified CUDA calls (memory queries, empty_cache)
            # made on this worker's thread then concern its own GPU
            torch.cuda.set_device(self.device)

    def _load(self, name: str) -> Any:
        """Load the listed model ``name`` (called by :class:`LoadedModels`, which evicted first if it had to)."""
        with LOAD_LOCK:
            spec = self.service.models.spec_of(name)
            log.info("loading model %s on %s ...", name, self.slot.name)
            try:
                import engine

                self._set_up_torch()
                editor = engine.load_editor(spec, device=self.device, cache_dir=self.cache_dir,
                                            cache_max_mb=self.cache_max_mb, precision=self.precision,
                                            compile_unet=self.compile_unet)
            except EngineError:
                raise
            except Exception as exc:  # ImportError, OSError, a bad checkpoint: readable, and keep serving
                log.exception("loading model %s failed", name)
                raise ModelUnavailable(f"could not load model {name!r}: {_short(exc)}") from None
            if self._stage_cache is None:
                self._stage_cache = editor.cache
            else:  # keys name the model: one cache serves them all, and an evicted model's LoRA stages outlive it
                editor.cache = self._stage_cache
            # torch and the model leave millions of long-lived objects: a full garbage collection walking them
            # stalled the answering thread for ~0.4 s (a 100-job burst); freeze them out of the collector.
            gc.collect()
            gc.freeze()
            self.service.model_loaded(name, editor.model.modes)
            m = editor.model
            if self.device is None and self.slot.name.startswith("auto@"):  # now it knows where "auto" put it
                self.slot.name = f"{m.device}@{socket.gethostname()}"
                if self.slot.job:
                    self.service.set_worker(self.slot.job, self.slot.name)
            log.info("model %s loaded on %s, weights %s", name, m.device,
                     str(m.weight_dtype or m.dtype).removeprefix("torch."))
            return editor

    def _evicted(self, name: str, editor: Any) -> None:
        """A full fine-tune's stages are a whole UNet of that model's (memory only): they go with it."""
        if self._stage_cache is not None:
            self._stage_cache.drop_full()

    def _run_job(self, job: Job, token: CancelToken) -> None:
        sv, jid = self.service, job.id
        name = job.model or sv.models.label
        try:
            loading = not self.models.has(name)
            report = self._reporter(jid)
            if loading:
                report("loading", 0.0)  # the status names the model (its "model"), the stage says it loads
            with self.models.use(name) as editor:
                pm = ProgressMap(editor.resolve_params(job.params), loading=loading)
                token.check()
                # the limits hold for the samples read (one descriptor, one header), not the file probed at the
                # ack; the edit gets exactly those samples and opens nothing itself, nor does the input's picture
                audio = sv.read_source(job)
                result = editor.edit(job.request, progress=lambda p: report(*pm(p)), cancel=token, audio=audio)
                source_audio = audio.samples  # for its picture (docs/protocol.md)
                del audio
            sv.check_output(job, result.sample_rate, result.channels, result.frames)  # a last guard before writing
            token.check()
            report("writing", pm.writing())
            pictures = make_pictures(source_audio, [t.audio for t in result.takes], result.sample_rate, jid)
            takes, picture_fields = write_takes(sv, job, [(t.eta, _float_wav(t.audio, result.sample_rate),
                                                           t.scores.to_dict() if t.scores is not None else None)
                                                          for t in result.takes], token, pictures)
            sv.finish(
                jid,
                "done",
                **picture_fields,
                takes=takes,
                model=name,  # the model that ran, as daemon.json lists it ("auto" resolved)
                best=result.best,
                sample_rate=result.sample_rate,
                channels=result.channels,
                frames=result.frames,
                network_calls=result.network_calls,
                notes=list(result.notes),
            )
            return
        except Cancelled:
            state, msg = "cancelled", token.reason or "cancelled"
        except EngineError as exc:
            state, msg = "failed", str(exc)
        except MemoryError:
            state, msg = "failed", "out of memory: try a shorter region or fewer η values"
        except Exception as exc:  # a bug: log it, fail this job, keep serving
            log.exception("job %s: unexpected error", jid)
            state, msg = "failed", f"internal error ({type(exc).__name__}: {_short(exc)}); see aiedit.log"
        sv.spool.remove_takes(jid)  # a failed or cancelled job leaves no takes
        sv.finish(jid, state, msg)

    def _reporter(self, jid: str) -> Callable[[str, float], None]:
        def report(stage: str, fraction: float) -> None:
            self.slot.progress = fraction  # for the pool's "free soon" estimate
            self.service.progress(jid, stage, fraction)

        return report


TakeWriter = Callable[[Any], None]  # writes one take's WAV file into the open binary file it is given
Pictures = tuple[bytes | None, list[bytes | None]]  # the input's spectrogram PNG and one per take (engine.pictures)
INPUT_PICTURE = "input.png"


def make_pictures(input_audio: Any, takes_audio: list[Any], sample_rate: int, jid: str) -> Pictures | None:
    """The spectrogram pictures of a finished job (docs/protocol.md), made here, in the worker: never on the
    answering thread. None, logged, when they cannot be made: a job never fails for a picture."""
    try:
        from engine.pictures import job_pictures

        return job_pictures(input_audio, takes_audio, sample_rate)
    except Exception as exc:  # a picture is a convenience: log it, keep the takes
        log.warning("job %s: no spectrogram pictures (%s: %s)", jid, type(exc).__name__, _short(exc))
        return None


def _bytes(data: bytes) -> TakeWriter:
    def write(fh: Any) -> None:
        fh.write(data)

    return write


def _float_wav(audio: Any, sample_rate: int) -> TakeWriter:
    def write(fh: Any) -> None:
        import numpy as np
        import soundfile as sf

        sf.write(fh, np.asarray(audio, dtype=np.float32), sample_rate, format="WAV", subtype="FLOAT")

    return write


def write_takes(service: Service, job: Job, takes: list[tuple[float, TakeWriter, dict[str, Any] | None]],
                token: CancelToken, pictures: Pictures | None = None) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Write every take (η, writer, scores) under a hidden name, then rename them all into place: the caller
    writes the final status right after, and a restart withdraws takes whose job never reached it (see
    Service.recover). Files are 0600 and written relative to folder descriptors (see :class:`bridge.jobs.spool.Spool`).
    Shared by the local worker and the Ray one (:mod:`bridge.workers.remote`), whose takes arrive as bytes.
    ``pictures`` (the input's PNG and one per take) are written and renamed with the takes, as ``eta0.30.png``
    beside ``eta0.30.wav`` and ``input.png``. Returns the status's takes and its ``input_spectrogram`` field."""
    spool = service.spool
    used: set[str] = set()
    pending: list[tuple[str, str]] = []
    out = []
    take_pngs = pictures[1] if pictures else []
    for i, (eta, write, scores) in enumerate(takes):
        token.check()
        final = take_name(eta, used)
        pending.append((spool.write_partial_take(job.id, write), final))
        entry: dict[str, Any] = {"eta": eta, "path": service.path_map.to_client(str(spool.takes_dir(job.id) / final)),
                                 "scores": scores}
        png = take_pngs[i] if i < len(take_pngs) else None
        if png:
            name = final.removesuffix(".wav") + ".png"
            pending.append((spool.write_partial_take(job.id, _bytes(png)), name))
            entry["spectrogram"] = service.path_map.to_client(str(spool.takes_dir(job.id) / name))
        out.append(entry)
    fields: dict[str, str] = {}
    if pictures and pictures[0]:
        pending.append((spool.write_partial_take(job.id, _bytes(pictures[0])), INPUT_PICTURE))
        fields["input_spectrogram"] = service.path_map.to_client(str(spool.takes_dir(job.id) / INPUT_PICTURE))
    token.check()
    spool.publish_takes(job.id, pending)
    return out, fields


def _default_device() -> str:
    """Where ``--device`` unset puts the models (engine.load_editor's choice); imports torch (worker thread only)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]
