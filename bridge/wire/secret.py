"""Where the shared token comes from: ``--token-file`` (a file only its owner can read), ``$AIEDIT_TOKEN``, or
``--token`` (kept for compatibility, with a warning: a command line is visible to every local user in ``ps``)."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

TOKEN_ENV = "AIEDIT_TOKEN"
MAX_TOKEN_BYTES = 4096
ARGV_WARNING = ("warning: --token on the command line is visible to every user of this machine (ps); "
                f"use --token-file FILE (mode 0600) or ${TOKEN_ENV}")


class TokenError(ValueError):
    """The token cannot be read as configured (one line for the console)."""


def read_token_file(path: str) -> str:
    """The token in ``path`` (surrounding whitespace removed). The file must be a regular file owned by this
    user and readable by no one else (mode 0600 or 0400), or TokenError says why."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise TokenError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TokenError(f"the token file {path} is not a regular file")
        if os.name != "nt":
            if st.st_mode & 0o077:
                raise TokenError(f"the token file {path} is readable by others (mode {st.st_mode & 0o777:04o}); "
                                 f"run: chmod 600 {path}")
            if st.st_uid != os.getuid():
                raise TokenError(f"the token file {path} belongs to another user (uid {st.st_uid})")
        data = os.read(fd, MAX_TOKEN_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_TOKEN_BYTES:
        raise TokenError(f"the token file {path} is larger than {MAX_TOKEN_BYTES} bytes")
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise TokenError(f"the token file {path} is not UTF-8 text") from None
    if not token:
        raise TokenError(f"the token file {path} is empty")
    return token


def resolve_token(token: str | None, token_file: str | None, *, on_command_line: bool = False,
                  env: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """(the token or None, a warning or None): ``--token-file``, else ``--token``, else ``$AIEDIT_TOKEN``."""
    if token and token_file:
        raise TokenError("give --token or --token-file, not both")
    if token_file:
        return read_token_file(token_file), None
    if token:
        return token, ARGV_WARNING if on_command_line else None
    value = (os.environ if env is None else env).get(TOKEN_ENV, "").strip()
    return value or None, None
