"""What this daemon takes: the work limits of one job (``aiedit serve --max-*``), checked before it is queued and
again on the file a worker reads, and how many jobs may wait at once."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.jobs.protocol import Job, ProtocolError

MAX_QUEUED = 1000


@dataclass(frozen=True)
class Limits:
    """What one job may cost, checked before it is queued (``aiedit serve --max-*``)."""

    max_seconds: float = 120.0
    max_channels: int = 8
    max_output_mb: float = 1024.0

    def check(self, job: Job, sample_rate: int, channels: int, frames: int) -> None:
        """ProtocolError with the numbers when the region or its takes are over a limit."""
        problem = self.problem(sample_rate, channels, frames, len(job.params.etas))
        if problem:
            raise ProtocolError(problem, job.id)

    def problem(self, sample_rate: int, channels: int, frames: int, takes: int) -> str | None:
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
        return None
