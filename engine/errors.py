"""Errors the engine raises, worded for the musician who will read them.

Every error a user can cause or fix derives from :class:`EngineError`, so callers (the CLI, the daemon) can show
``str(err)`` as-is and keep going. Anything else escaping the engine is a bug.
"""

from __future__ import annotations


class EngineError(Exception):
    """A problem the user can understand and act on; ``str()`` is a one-line message."""


class InputError(EngineError):
    """Bad audio, region, prompt or parameters."""


class ModelUnavailable(EngineError):
    """The model's weights cannot be found or loaded."""


class NotFinite(EngineError):
    """The model produced NaN or Inf (diverged weights or training): the job fails rather than return silence."""


class OutOfMemory(EngineError):
    """The device ran out of memory; the edit was abandoned and memory released."""


class Cancelled(Exception):
    """The caller's cancel token was set; raised between steps."""
