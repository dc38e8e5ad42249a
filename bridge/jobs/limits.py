"""What this daemon takes: the work limits of one job (``aiedit serve --max-*``), checked before it is queued and
again on the file a worker reads, and how many jobs may wait at once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bridge.jobs.protocol import Job, ProtocolError
from engine.memory import JobShape, ModelMemory, estimate_job_bytes, model_memory

MAX_QUEUED = 1000


@dataclass(frozen=True)
class Limits:
    """What one job may cost, checked before it is queued (``aiedit serve --max-*``)."""

    max_seconds: float = 120.0
    max_channels: int = 8
    max_output_mb: float = 1024.0
    max_job_mb: float | None = None  # the job's estimated peak memory beyond the model (None: not checked)
    # a listed model's figures (engine.memory) by its name, None the default (the Service sets its menu's)
    memory_for: Callable[[str | None], ModelMemory] | None = None
    device: str = "cpu"  # where the stages run: on a GPU their working memory is not the host's

    def check(self, job: Job, sample_rate: int, channels: int, frames: int) -> None:
        """ProtocolError with the numbers when the region or its takes are over a limit."""
        problem = self.problem(sample_rate, channels, frames, len(job.params.etas), job.params.mode, job.model)
        if problem:
            raise ProtocolError(problem, job.id)

    def problem(self, sample_rate: int, channels: int, frames: int, takes: int, mode: str = "lora",
                model: str | None = None) -> str | None:
        """What is over a limit, with the numbers, or None."""
        seconds = frames / sample_rate
        if seconds > self.max_seconds:
            return (f"the region is {seconds:.1f} s long; this engine takes at most {self.max_seconds:g} s "
                    "(aiedit serve --max-seconds)")
        if channels > self.max_channels:
            return (f"the source has {channels} channels; this engine takes at most {self.max_channels} "
                    "(aiedit serve --max-channels)")
        mb = frames * channels * takes * 4 / 1e6  # 32-bit float takes
        if mb > self.max_output_mb:
            return (f"the takes would need about {mb:.0f} MB ({seconds:.1f} s x {channels} ch x {takes} takes at "
                    f"{sample_rate} Hz); at most {self.max_output_mb:g} MB (aiedit serve --max-output-mb)")
        if self.max_job_mb is not None:
            row = self.memory_for(model) if self.memory_for is not None else model_memory(model)
            est = estimate_job_bytes(JobShape(frames, channels, sample_rate, takes, mode), row, self.device)
            if est.mb > self.max_job_mb:
                return (f"the edit would need about {est.mb:.0f} MB of memory ({seconds:.1f} s x {channels} ch at "
                        f"{sample_rate} Hz, {takes} takes, mode {mode}); at most {self.max_job_mb:g} MB "
                        "(aiedit serve --max-job-mb)")
        return None
