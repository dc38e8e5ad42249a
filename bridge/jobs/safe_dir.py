"""Folders inside the spool that are written without ever following a link a spool client planted.

Where the OS has ``dir_fd`` (Linux, macOS, BSD) a :class:`SafeDir` holds a descriptor opened with
``O_NOFOLLOW | O_DIRECTORY`` at every step below the spool root, and every create, rename and delete is made
relative to it: a link swapped in while we write cannot redirect anything. Without ``dir_fd`` (Windows) it holds a
path and checks, right before each operation, that no step below the root is a link (``os.lstat``); files are
still created exclusively and renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from pathlib import Path
from typing import Any

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
FILE_MODE = 0o600  # spool files hold prompts, source paths and edits of the user's audio
DIR_MODE = 0o700
HAVE_DIR_FD = {os.open, os.mkdir, os.rename, os.unlink, os.stat, os.rmdir} <= os.supports_dir_fd
_EXCL = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC | getattr(os, "O_BINARY", 0)


class SafeDir:
    """One folder below a spool root; use as a context manager (it may hold a descriptor)."""

    def __init__(self, root: Path, parts: tuple[str, ...], fd: int | None) -> None:
        self.root, self.parts, self.fd = root, parts, fd

    @classmethod
    def open(cls, root: Path, *parts: str, create: bool = False, use_fd: bool | None = None) -> SafeDir:
        """``root/parts...``, refusing a link (or non-folder) at every step below ``root`` (OSError); with
        ``create``, missing steps are made 0700. ``use_fd`` defaults to :data:`HAVE_DIR_FD`."""
        if not (HAVE_DIR_FD if use_fd is None else use_fd):
            d = cls(Path(root), (), None)
            for part in parts:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(d._path(part), DIR_MODE)
                d = cls(Path(root), (*d.parts, part), None)
            d._check()
            return d
        fd = os.open(root, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
        try:
            for part in parts:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, DIR_MODE, dir_fd=fd)
                nfd = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return cls(Path(root), tuple(parts), fd)

    def sub(self, name: str) -> SafeDir:
        """An existing child folder (no link followed)."""
        if self.fd is None:
            return SafeDir.open(self.root, *self.parts, name, use_fd=False)
        fd = os.open(name, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=self.fd)
        return SafeDir(self.root, (*self.parts, name), fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> SafeDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- operations relative to this folder -----------------------------------------------------------------------

    def mkdir(self, name: str) -> None:
        """Make ``name`` exclusively (FileExistsError when anything is there, a dangling link included)."""
        if self.fd is None:
            os.mkdir(self._path(name), DIR_MODE)
        else:
            os.mkdir(name, DIR_MODE, dir_fd=self.fd)

    def create(self, name: str) -> int:
        """A new file ``name`` (exclusive, 0600, no link followed) open for writing."""
        if self.fd is None:
            return os.open(self._path(name), _EXCL, FILE_MODE)
        return os.open(name, _EXCL, FILE_MODE, dir_fd=self.fd)

    def replace(self, src: str, dst: str, dst_dir: SafeDir | None = None) -> None:
        """Rename ``src`` here to ``dst`` here (or in ``dst_dir``), replacing whatever ``dst`` is (a link there is
        replaced, not followed)."""
        to = dst_dir or self
        if self.fd is None or to.fd is None:
            os.replace(self._path(src), to._path(dst))
        else:
            os.rename(src, dst, src_dir_fd=self.fd, dst_dir_fd=to.fd)  # rename replaces on POSIX

    def unlink(self, name: str) -> None:
        if self.fd is None:
            os.unlink(self._path(name))
        else:
            os.unlink(name, dir_fd=self.fd)

    def lstat(self, name: str) -> os.stat_result:
        if self.fd is None:
            return os.lstat(self._path(name))
        return os.stat(name, dir_fd=self.fd, follow_symlinks=False)

    def exists(self, name: str) -> bool:
        try:
            self.lstat(name)
            return True
        except OSError:
            return False

    def listdir(self) -> list[str]:
        return os.listdir(self._path(".") if self.fd is None else self.fd)

    def write(self, name: str, data: bytes) -> None:
        """Atomically replace ``name`` with ``data`` (exclusive temporary name, then rename; 0600)."""
        tmp = f".tmp-{secrets.token_hex(6)}"
        fd = self.create(tmp)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            self.replace(tmp, name)
        except BaseException:
            with contextlib.suppress(OSError):
                self.unlink(tmp)
            raise

    def remove_tree(self, name: str) -> None:
        """Delete ``name``: a file or link is unlinked (never followed), a folder removed with its contents."""
        try:
            st = self.lstat(name)
        except OSError:
            return
        with contextlib.suppress(OSError):
            if not stat.S_ISDIR(st.st_mode):
                self.unlink(name)
            elif self.fd is None:
                shutil.rmtree(self._path(name))  # refuses links and (3.12+) junctions at the top
            else:
                shutil.rmtree(name, dir_fd=self.fd)  # fd-based: does not follow links inside

    # -- the path fallback ----------------------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        self._check()
        return self.root.joinpath(*self.parts, name)

    def _check(self) -> None:
        p = self.root
        for part in self.parts:
            p = p / part
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode) or _is_junction(p):
                raise OSError(errno.ELOOP, "a link or non-folder inside the spool", str(p))


def _is_junction(p: Path) -> bool:
    f: Any = getattr(os.path, "isjunction", None)
    return bool(f(p)) if f else False
