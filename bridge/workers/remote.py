"""``aiedit serve --ray ADDRESS|local``: the edits run on Ray actors, the daemon stays REAPER's only door.

Each actor (:class:`EditActor`, one per GPU across the cluster, or per ``--devices`` entry) holds up to
``--max-models`` loaded models, as a local worker does (:mod:`bridge.workers.loaded`: a job may name any model the
daemon lists, the least recently used is evicted), and runs one edit at a time. A daemon-side thread per actor
(:class:`RemoteWorker`) takes jobs from the daemon's queue like a local worker does (:mod:`bridge.workers.pool`),
so OSC, the spool and the job order are unchanged:

- the source region travels by value (read here, float32 samples: no shared file system needed), the takes come
  back as WAV bytes and are written here, atomically, as a local worker writes them;
- progress is polled from the actor (a threaded actor answers while it edits); cancel is an actor method that
  sets the edit's cancel token (Ray cannot interrupt a running task of a threaded actor, and the engine stops
  cleanly between steps);
- an actor (or its node) that dies mid-job is replaced, and the job goes back to the head of the queue once:
  another actor runs it; a second death fails it. A dead attempt never reports, so a job ends exactly once.

Ray is imported only here, and only with ``--ray`` (the optional extra ``aiedit[cluster]``).
Ray API used: ``ray.init``, ``ray.remote(...).options(name=, namespace=, num_cpus=, num_gpus=, max_concurrency=)``,
``ray.wait``/``ray.get`` with timeouts, ``ray.get_gpu_ids``, ``ray.exceptions.RayActorError`` (docs.ray.io, 2.60).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import threading
import time
import traceback
from typing import Any

from bridge.jobs.protocol import Job
from bridge.jobs.service import Service
from bridge.workers.local import WRITING, ProgressMap, make_pictures, write_takes
from bridge.workers.pool import Pool, Slot
from engine.audio_io import SourceAudio
from engine.errors import Cancelled, EngineError
from engine.params import EditRequest
from engine.progress import CancelToken

log = logging.getLogger("aiedit.remote")

NAMESPACE = "aiedit"
POLL_S = 0.2  # progress poll and cancel check interval while an actor edits
RESTART_S = 5.0  # pause before replacing an actor that died or failed to load
# An actor not ready after this is given up and killed: Ray cannot place it (no free GPU left: --devices cuda,cuda
# on a one-GPU cluster) or its model cannot load there; otherwise its slot would stay "loading" for ever.
PLACE_S = 300.0
# After this many failed starts in a row of every Ray worker, queued jobs fail with the reason (as a local worker
# fails a job whose model cannot load) instead of waiting in silence; the workers keep trying.
START_FAILURES = 3
INSTALL_MSG = "--ray needs Ray on this machine and on every node: pip install 'aiedit[cluster]'"


class RayUnavailable(Exception):
    """Ray is not installed, or the cluster cannot be reached (one line for the console)."""


def check_installed() -> None:
    """ImportError with how to install Ray, when it is not (``aiedit serve`` says it in one line)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ImportError(INSTALL_MSG) from None


def connect(address: str) -> Any:
    """``ray.init`` for the daemon: ``local`` starts a private instance, anything else is a cluster address."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable(INSTALL_MSG) from None
    _probe(address)
    kwargs: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": False, "configure_logging": False}
    if address == "local":
        kwargs["include_dashboard"] = False
    try:
        ray.init(address=address, **kwargs)
    except Exception as exc:  # ConnectionError, ValueError (bad address), a version mismatch
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RayUnavailable(f"cannot join the Ray cluster at {address!r}: {text[:200]}") from None
    return ray


# HTTP/2's client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS is one) answers with its own
# SETTINGS frame (RFC 9113 §3.4), anything else (a web server, ssh, a silent port) does not.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
PROBE_S = 5.0  # connect, and the first answer
JOIN_S = 120.0  # joining a cluster as a whole: past this the daemon stops with one line (bridge.daemon)


def _probe(address: str) -> None:
    """Fail fast when nothing listens at a ``host:port`` address, or something that is not Ray does: ``ray.init``
    retries for many minutes against the first and hangs for ever against the second."""
    if address in ("local", "auto") or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise RayUnavailable(f"--ray {address!r}: give the head node as HOST:PORT (ray start --head prints it), "
                             "or local")
    try:
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_S)
    except OSError as exc:
        raise RayUnavailable(f"nothing answers at {address} ({exc.strerror or exc}): is `ray start --head` "
                             "running there?") from None
    with sock:
        answer = b""
        try:
            sock.sendall(H2_PREFACE)
            while len(answer) < 9:
                chunk = sock.recv(9 - len(answer))
                if not chunk:
                    break
                answer += chunk
        except OSError:  # a timeout, a reset
            pass
    if not _grpc_settings(answer):
        raise RayUnavailable(f"{address} is not a Ray cluster (it does not answer as Ray's head node does): give "
                             "the address `ray start --head` prints (default port 6379)")


def _grpc_settings(answer: bytes) -> bool:
    """An HTTP/2 SETTINGS frame header on stream 0 (gRPC), or a TLS record (a Ray cluster with TLS enabled)."""
    if len(answer) >= 1 and answer[0] in (0x15, 0x16):  # TLS alert or handshake: ray.init with TLS decides
        return True
    return len(answer) == 9 and answer[3] == 0x04 and answer[5:9] == b"\x00\x00\x00\x00"


def actor_kinds(ray: Any, devices: str | None) -> list[str]:
    """One entry per actor: ``"cuda"`` (``num_gpus=1``) or ``"cpu"`` (``num_cpus=1``). ``--devices`` names them
    (``cuda,cuda,cpu``; a GPU index is Ray's to choose); without it (or ``all``), one per GPU in the cluster."""
    if devices and devices.strip() != "all":
        kinds = []
        for part in devices.split(","):
            d = part.strip()
            if d != "cpu" and d != "cuda" and not (d.startswith("cuda:") and d[5:].isdigit()):
                raise RayUnavailable(f"--devices: {d!r} is not a device (cpu, cuda, cuda:N; or all)")
            kinds.append("cpu" if d == "cpu" else "cuda")
        return kinds
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus == 0:
        raise RayUnavailable("the Ray cluster has no GPU; name CPU actors with --devices cpu,cpu")
    return ["cuda"] * gpus


class EditActor:
    """Runs on a Ray node: up to ``max_models`` loaded models (:class:`bridge.workers.loaded.LoadedModels`, as a
    local worker keeps them; ``models`` = the daemon's (name, family) list for the default number), one edit at a
    time, progress and cancel answered meanwhile (created with ``max_concurrency`` > 1, so its methods run on
    threads)."""

    def __init__(self, model: str, kind: str, index: int, cache_dir: str | None, precision: str,
                 compile_unet: bool, max_models: int | None = None,
                 models: list[tuple[str, str | None]] | None = None, name: str | None = None,
                 cache_max_mb: float | None = None) -> None:
        from bridge.workers.loaded import LoadedModels

        self.model, self.kind, self.index = model, kind, index
        self.name = name or model  # the default model's listed name; ``model`` is what loads it
        self.cache_dir, self.precision, self.compile_unet = cache_dir, precision, compile_unet
        self.cache_max_mb = cache_max_mb
        self.menu = list(models or [(self.name, None)])
        self.specs: dict[str, str] = {self.name: model}
        self.loaded = LoadedModels(self._load, limit=max_models, default_limit=self._default_limit,
                                   on_evict=self._evicted)
        self._stage_cache: Any = None
        self._lock = threading.Lock()
        self._tokens: dict[str, CancelToken] = {}
        self._progress: dict[str, tuple[str, float]] = {}
        self._early: dict[str, str] = {}  # cancels that arrived before their edit started

    def _device(self) -> str:
        return "cuda" if self.kind == "cuda" else "cpu"

    def _default_limit(self) -> int:
        from bridge.workers.loaded import default_max_models, free_gib

        free = free_gib(self._device())
        n = default_max_models(free, self.menu, gpu=self.kind == "cuda", precision=self.precision)
        print(f"aiedit actor {self.index}: {'?' if free is None else f'{free:.1f}'} GiB free: room for {n} model(s) "
              "at once", flush=True)  # into the actor's log (Ray's session logs on that node)
        return n

    def _load(self, name: str) -> Any:
        import engine

        editor = engine.load_editor(self.specs.get(name, name), device=self._device(), cache_dir=self.cache_dir,
                                    cache_max_mb=self.cache_max_mb, precision=self.precision,
                                    compile_unet=self.compile_unet)
        if self._stage_cache is None:
            self._stage_cache = editor.cache
        else:  # one cache for every model (keys name the model), as on a local worker
            editor.cache = self._stage_cache
        return editor

    def _evicted(self, name: str, editor: Any) -> None:
        if self._stage_cache is not None:
            self._stage_cache.drop_full()

    def ready(self) -> dict[str, Any]:
        """Load the default model; the worker's name (``cuda:<Ray's GPU id>@node`` or ``cpu:<index>@node``)."""
        editor = self.loaded.acquire(self.name)
        self.loaded.release(self.name)
        if self.kind == "cuda":
            import ray

            ids = ray.get_gpu_ids()
            label = f"cuda:{ids[0] if ids else 0}"
        else:
            label = f"cpu:{self.index}"
        return {"name": f"{label}@{socket.gethostname()}", "model": self.name,
                "modes": tuple(editor.model.modes), "loaded": self.loaded.names(), "pid": os.getpid()}

    def edit(self, jid: str, request: EditRequest, audio: Any, sample_rate: int, model: str | None = None,
             spec: str | None = None) -> dict[str, Any]:
        """Edit the region (``audio``: frames x channels float32) with the listed model ``model`` (loaded from
        ``spec`` unless held; None: the default) and return the takes as WAV bytes, or
        ``{"state": "failed"|"cancelled", "error"}``; never raises (the daemon tells a dead actor from a failed
        edit by the exception). ``loaded`` in every answer: the models held afterwards."""
        import io

        import numpy as np
        import soundfile as sf

        t_start = time.time()
        token = CancelToken()
        name = model or self.name
        if spec is not None:
            self.specs[name] = spec
        loading = not self.loaded.has(name)
        with self._lock:
            self._tokens[jid] = token
            self._progress[jid] = ("loading" if loading else "preparing", 0.0)
            if jid in self._early:
                token.cancel(self._early.pop(jid))
        try:
            with self.loaded.use(name) as editor:
                token.check()
                pm = ProgressMap(editor.resolve_params(request.params), loading=loading)
                source = SourceAudio(np.asarray(audio, dtype=np.float32), int(sample_rate))
                del audio
                result = editor.edit(request, progress=lambda p: self._set(jid, *pm(p)), cancel=token,
                                     audio=source)
                modes = tuple(editor.model.modes)
            token.check()
            # the pictures are made here, on the actor, like the takes (docs/protocol.md)
            pictures = make_pictures(source.samples, [t.audio for t in result.takes], result.sample_rate, jid)
            takes = []
            for i, t in enumerate(result.takes):
                buf = io.BytesIO()
                sf.write(buf, np.asarray(t.audio, dtype=np.float32), result.sample_rate, format="WAV",
                         subtype="FLOAT")
                takes.append({"eta": t.eta, "wav": buf.getvalue(),
                              "scores": t.scores.to_dict() if t.scores is not None else None,
                              "png": pictures[1][i] if pictures else None})
            return {"state": "done", "model": name, "modes": modes, "best": result.best,
                    "input_png": pictures[0] if pictures else None,
                    "sample_rate": result.sample_rate, "channels": result.channels, "frames": result.frames,
                    "network_calls": result.network_calls, "notes": list(result.notes), "takes": takes,
                    "loaded": self.loaded.names(), "t_start": t_start, "t_end": time.time()}
        except Cancelled:
            return {"state": "cancelled", "error": token.reason or "cancelled", "loaded": self.loaded.names()}
        except EngineError as exc:
            return {"state": "failed", "error": str(exc), "loaded": self.loaded.names()}
        except MemoryError:
            return {"state": "failed", "error": "out of memory: try a shorter region or fewer η values",
                    "loaded": self.loaded.names()}
        except Exception as exc:
            traceback.print_exc()  # into the actor's log (Ray's session logs on that node)
            return {"state": "failed", "error": f"internal error on the Ray worker ({type(exc).__name__}: "
                                                f"{str(exc).strip()[:200]})", "loaded": self.loaded.names()}
        finally:
            with self._lock:
                self._tokens.pop(jid, None)
                self._progress.pop(jid, None)

    def _set(self, jid: str, stage: str, fraction: float) -> None:
        self._progress[jid] = (stage, fraction)

    def progress(self, jid: str) -> tuple[str, float] | None:
        return self._progress.get(jid)

    def cancel(self, jid: str, reason: str) -> None:
        with self._lock:
            token = self._tokens.get(jid)
            if token is not None:
                token.cancel(reason)
            else:
                self._early[jid] = reason


class RemoteWorker(threading.Thread):
    """The daemon's side of one actor: takes jobs from the queue, ships them, streams progress, writes takes."""

    def __init__(self, service: Service, pool: Pool, slot: Slot, ray: Any, kind: str, index: int, *,
                 cache_dir: str | None, precision: str, compile_unet: bool, max_models: int | None = None,
                 cache_max_mb: float | None = None) -> None:
        super().__init__(name=f"aiedit-remote-{index}", daemon=True)
        self.service, self.pool, self.slot, self.ray = service, pool, slot, ray
        self.kind, self.index = kind, index
        menu = service.models  # the actor loads the default by its spec, and knows every listed model's size
        self.args = (menu.spec_of(menu.label), kind, index, cache_dir, precision, compile_unet, max_models,
                     [(m.name, m.family) for m in menu.models], menu.label, cache_max_mb)
        self.actor: Any = None
        self.generation = 0
        self.failures = 0  # failed starts in a row
        self.start_error = ""
        self._actor_cls = ray.remote(EditActor)

    # -- the actor's life ------------------------------------------------------------------------------------

    def _start_actor(self) -> bool:
        """Create the actor and wait until its model is loaded; False (slot dead) when that fails."""
        name = f"aiedit-{os.getpid()}-{self.index}-{self.generation}"
        self.generation += 1
        resources = {"num_gpus": 1} if self.kind == "cuda" else {"num_cpus": 1}
        self.pool.set_state(self.slot, "loading")
        self.slot.extra = {"actor": name}
        actor = None
        deadline = time.monotonic() + PLACE_S
        try:
            actor = self._actor_cls.options(name=name, namespace=NAMESPACE, max_concurrency=4,
                                            **resources).remote(*self.args)
            ref = actor.ready.remote()
            while not self.ray.wait([ref], timeout=0.5)[0]:
                if self.service.closed.is_set():
                    self._kill(actor)
                    return False
                if time.monotonic() > deadline:
                    need = ", ".join(f"{k}={v}" for k, v in resources.items())
                    raise TimeoutError(f"cannot place the actor: not ready after {PLACE_S:.0f} s (it needs {need}; "
                                       "is that free in the cluster, and does the model load there?)")
            info = self.ray.get(ref)
        except Exception as exc:
            self.start_error = _short(exc)
            self.failures += 1
            log.error("Ray worker %s could not start: %s", name, self.start_error)
            if actor is not None:
                self._kill(actor)  # a pending actor would keep its claim on the resources
            self.pool.set_state(self.slot, "dead")
            return False
        self.failures = 0
        self.actor = actor
        self.slot.name = info["name"]
        self.service.model_loaded(info["model"], info["modes"])
        self.pool.set_models(self.slot, info["loaded"])
        self.pool.set_state(self.slot, "idle")
        log.info("Ray worker %s ready as %s (pid %s)", name, info["name"], info["pid"])
        return True

    def run(self) -> None:
        choose = self.pool.chooser(self.slot)
        while not self.service.closed.is_set():
            if self.actor is None:
                if not self._start_actor():
                    self._fail_queued_if_hopeless()
                    self.service.closed.wait(RESTART_S)
                continue
            item = self.service.next_job(0.5, self.slot.name, choose)
            try:
                if item is not None:
                    self._run_job(*item)
            finally:
                self.pool.release(self.slot)

    def _fail_queued_if_hopeless(self) -> None:
        """When every Ray worker has failed to start ``START_FAILURES`` times in a row, fail the queued jobs with
        the reason (taken one by one, as a worker would take them)."""
        if self.failures < START_FAILURES or any(s.state != "dead" for s in self.pool.slots):
            return
        msg = f"no Ray worker could start ({self.start_error}); see aiedit.log"
        while (item := self.service.next_job(0.0, self.slot.name)) is not None:
            self.service.finish(item[0].id, "failed", msg)

    # -- one job ---------------------------------------------------------------------------------------------

    def _run_job(self, job: Job, token: CancelToken) -> None:
        """Run one job on the actor; whatever goes wrong here fails the job, never the thread (which would leave
        the job running and the slot busy for ever)."""
        sv, jid = self.service, job.id
        try:
            self._attempt(job, token)
            return
        except MemoryError:
            msg = "out of memory: try a shorter region or fewer η values"
        except Exception as exc:  # a bug, a serialisation error, a malformed answer: log it, fail this job
            log.exception("job %s: unexpected error on the Ray path", jid)
            msg = f"internal error ({type(exc).__name__}: {_short(exc)}); see aiedit.log"
        sv.spool.remove_takes(jid)
        sv.finish(jid, "failed", msg)

    def _attempt(self, job: Job, token: CancelToken) -> None:
        from ray.exceptions import GetTimeoutError, RayActorError, RayError

        sv, jid, ray = self.service, job.id, self.ray
        try:
            # the limits hold for the samples read (one descriptor, one header), not the file probed at the ack
            audio = sv.read_source(job)
        except (EngineError, OSError) as exc:
            sv.finish(jid, "failed", str(exc) if isinstance(exc, EngineError) else f"cannot read the source: {exc}")
            return
        t_submit = time.time()
        name = job.model or sv.models.label
        ref = self.actor.edit.remote(jid, dataclasses.replace(job.request, source=""), audio.samples,
                                     audio.sample_rate, name, sv.models.spec_of(name))
        del audio
        cancel_sent = False
        try:
            while not ray.wait([ref], timeout=POLL_S)[0]:
                if token.cancelled and not cancel_sent:
                    self.actor.cancel.remote(jid, token.reason or "cancelled")
                    cancel_sent = True
                try:
                    now = ray.get(self.actor.progress.remote(jid), timeout=5.0)
                except GetTimeoutError:
                    now = None
                if now is not None:
                    self.slot.progress = now[1]
                    sv.progress(jid, *now)
            out = ray.get(ref)
        except RayActorError as exc:  # the actor, its process or its node died
            self._died(job, token, exc)
            return
        except RayError as exc:
            log.error("job %s: Ray error: %s", jid, _short(exc))
            sv.finish(jid, "failed", f"the Ray cluster failed during this job ({_short(exc)})")
            return
        if "loaded" in out:
            self.pool.set_models(self.slot, out["loaded"])
        if out["state"] != "done":
            sv.finish(jid, out["state"], out["error"])
            return
        sv.model_loaded(out["model"], out["modes"])
        t_result = time.time()
        try:
            sv.check_output(job, out["sample_rate"], out["channels"], out["frames"])
        except EngineError as exc:
            sv.finish(jid, "failed", str(exc))
            return
        try:
            sv.progress(jid, "writing", 1.0 - WRITING)
            pictures = (out.get("input_png"), [t.get("png") for t in out["takes"]])
            takes, picture_fields = write_takes(sv, job, [(t["eta"], _bytes_writer(t["wav"]), t["scores"])
                                                          for t in out["takes"]], token, pictures)
        except Cancelled:
            sv.spool.remove_takes(jid)
            sv.finish(jid, "cancelled", token.reason or "cancelled")
            return
        except (OSError, ValueError) as exc:
            sv.spool.remove_takes(jid)
            sv.finish(jid, "failed", f"cannot write the takes: {exc}")
            return
        written = time.time()
        sv.finish(jid, "done", takes=takes, model=out["model"], best=out["best"], sample_rate=out["sample_rate"],
                  channels=out["channels"], frames=out["frames"], network_calls=out["network_calls"],
                  notes=out["notes"], **picture_fields)
        log.info("job %s ran on %s: submit→start %.3f s, result→takes written %.3f s (of which writing %.3f s)",
                 jid, self.slot.name, out["t_start"] - t_submit, written - out["t_end"], written - t_result)

    def _kill(self, actor: Any) -> None:
        if actor is not None:
            with contextlib.suppress(Exception):  # already gone, or the cluster unreachable: nothing to free
                self.ray.kill(actor, no_restart=True)

    def _died(self, job: Job, token: CancelToken, exc: BaseException) -> None:
        """The actor died mid-job: replace it, and run the job again elsewhere once (see the module doc)."""
        sv, jid, name = self.service, job.id, self.slot.name
        log.warning("Ray worker %s died during job %s: %s", name, jid, _short(exc))
        # ActorUnavailableError is a RayActorError too, after which the actor may still be alive, holding its GPU
        self._kill(self.actor)
        self.actor = None
        self.pool.set_state(self.slot, "dead")
        if token.cancelled:
            sv.finish(jid, "cancelled", token.reason or "cancelled")
        elif self.pool.retry_once(jid):
            # requeue refuses, under the service's lock, a job cancelled since the check above: it ends cancelled
            if not sv.requeue(jid, f"its worker {name} died"):
                if token.cancelled:
                    sv.finish(jid, "cancelled", token.reason or "cancelled")
                else:
                    sv.finish(jid, "failed", f"the worker {name} died during this job")
        else:
            sv.finish(jid, "failed", f"the worker died during this job, twice (last {name})")


def _bytes_writer(data: bytes) -> Any:
    def write(fh: Any) -> None:
        fh.write(data)

    return write


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]
