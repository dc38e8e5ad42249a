"""Fetch a hub repository into the Hugging Face cache, resuming where an interrupted pull stopped.

Why not ``snapshot_download``: huggingface_hub 2.4 downloads each file into a process-unique temporary file and
deletes it when the download fails (``file_download._download_to_tmp_and_move``), so a pull of a 5 GB checkpoint
that is interrupted (a dropped connection after its five in-call retries, a closed laptop, Ctrl-C) starts again from
zero. This module keeps the same cache layout the loaders read (``models--org--name/blobs/<etag>``,
``snapshots/<commit>/<path>`` pointing at the blob, ``refs/main``) and the hub's own requests — the file listing
(``GET /api/models/<repo>/revision/main?blobs=true``), a ``HEAD`` of each ``/resolve/`` URL for its location and
etag (``huggingface_hub.get_hf_file_metadata``), then a ``GET`` with ``Range: bytes=N-`` — but the partial file
has a stable name (``blobs/<etag>.part``), so the next run asks only for the bytes it lacks.

Also here, because a pull must not fail half way for a reason known at the start: the free space on the cache's
disk is checked against what is still to fetch (plus what the caller will write after, e.g. a conversion) before
the first byte is requested. Git-LFS files are checked against their published SHA-256 before they are used.

The token is huggingface_hub's (``HF_TOKEN`` or ``hf auth login``), sent only to the hub's own origin (a CDN
location gets no ``Authorization`` header, as huggingface_hub does); it is never printed or written anywhere.
Nothing here imports torch.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

CHUNK = 1 << 20
TRIES = 5  # connection attempts per file in one run, each resuming where the last stopped
MARGIN = 64 << 20  # free space kept beyond what the pull itself needs
Progress = Callable[[str, int, int], None]  # (file, bytes present, total bytes)


class DownloadError(Exception):
    """A pull that cannot complete now (one line; says what to do)."""


class NotEnoughSpace(DownloadError):
    """The disk holding the cache has less free space than the pull needs."""


class _Retry(Exception):
    """A transient answer (rate limit, server error): try again, resuming."""


RETRY_STATUS = (408, 429, 500, 502, 503, 504)


@dataclass
class RemoteFile:
    path: str
    size: int
    blob: str  # the cache's blob name: the LFS SHA-256, else the git blob id
    sha256: str | None  # set for LFS files: checked after download


def free_bytes(path: Path) -> int:
    """Free bytes on the disk that holds ``path`` (or its nearest existing parent). A seam for tests."""
    for p in (path, *path.parents):
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return 0


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def endpoint() -> str:
    """The hub address, read at call time (``HF_ENDPOINT`` points the client at a mirror or a test server)."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def repo_folder(cache: Path, repo: str) -> Path:
    return cache / ("models--" + repo.replace("/", "--"))


def list_files(repo: str, patterns: list[str] | None = None) -> tuple[str, list[RemoteFile]]:
    """The repository's current commit and the files of it the patterns allow (all when None), with sizes."""
    from huggingface_hub import HfApi

    info = HfApi(endpoint=endpoint()).model_info(repo, revision="main", files_metadata=True)
    files = []
    for s in info.siblings or []:
        if patterns and not any(fnmatch.fnmatch(s.rfilename, p) for p in patterns):
            continue
        sha = s.lfs.sha256 if s.lfs else None
        blob = sha or s.blob_id
        if blob is None or s.size is None:
            raise DownloadError(f"the hub did not give the size and id of {repo}/{s.rfilename}")
        files.append(RemoteFile(s.rfilename, int(s.size), blob, sha))
    if info.sha is None:
        raise DownloadError(f"the hub did not say which commit {repo} is at")
    return info.sha, files


def _complete(path: Path, size: int) -> bool:
    try:
        return path.is_file() and path.stat().st_size == size
    except OSError:
        return False


def missing_bytes(folder: Path, commit: str, files: list[RemoteFile]) -> int:
    """Bytes still to fetch: files not in the snapshot, less what their partial files already hold."""
    need = 0
    for f in files:
        if _complete(folder / "snapshots" / commit / f.path, f.size) or _complete(folder / "blobs" / f.blob, f.size):
            continue
        part = folder / "blobs" / (f.blob + ".part")
        have = part.stat().st_size if part.is_file() else 0
        need += max(0, f.size - min(have, f.size))
    return need


def check_space(where: Path, need: int, what: str) -> None:
    """Refuse, before anything is fetched or written, a pull the disk holding ``where`` cannot take."""
    free = free_bytes(where)
    if free < need + MARGIN:
        raise NotEnoughSpace(f"not enough free space for {what}: it needs {human(need)} more (plus "
                             f"{human(MARGIN)} to spare) and {where} has {human(free)} free — free some space or "
                             "point HF_HOME (and AIEDIT_MODELS_HOME) at a larger disk, then run the same command again")


@dataclass
class Planned:
    """A repository's files as listed by the hub, and how many bytes of them are not here yet."""

    repo: str
    commit: str
    files: list[RemoteFile]
    folder: Path
    missing: int

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def plan(repo: str, patterns: list[str] | None, cache: Path) -> Planned:
    """List ``repo`` (one request) and count what is still to fetch into ``cache``; downloads nothing."""
    commit, files = list_files(repo, patterns)
    folder = repo_folder(cache, repo)
    return Planned(repo, commit, files, folder, missing_bytes(folder, commit, files))


def fetch(planned: Planned, progress: Progress | None = None) -> Path:
    """Bring the planned files into the cache (resuming partial ones); returns the snapshot folder."""
    for f in planned.files:
        _fetch_file(planned.repo, planned.commit, f, planned.folder, progress)
    (planned.folder / "refs").mkdir(parents=True, exist_ok=True)
    (planned.folder / "refs" / "main").write_text(planned.commit)
    return planned.folder / "snapshots" / planned.commit


def _fetch_file(repo: str, commit: str, f: RemoteFile, folder: Path, progress: Progress | None) -> None:
    pointer = folder / "snapshots" / commit / f.path
    blob = folder / "blobs" / f.blob
    if _complete(pointer, f.size):
        if progress:
            progress(f.path, f.size, f.size)
        return
    if not _complete(blob, f.size):
        _download(repo, commit, f, blob, progress)
    elif progress:
        progress(f.path, f.size, f.size)
    _link(blob, pointer)


def _link(blob: Path, pointer: Path) -> None:
    """The snapshot entry: a relative link to the blob, as huggingface_hub makes; where links are not allowed
    (Windows without developer mode) the blob itself moves there, as huggingface_hub also does."""
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.is_symlink() or pointer.exists():
        pointer.unlink()
    try:
        os.symlink(os.path.relpath(blob, pointer.parent), pointer)
    except OSError:
        os.replace(blob, pointer)


def _origin(url: str) -> tuple[str, str, int | None]:
    u = urlparse(url)
    return u.scheme, (u.hostname or "").lower(), u.port


def _download(repo: str, commit: str, f: RemoteFile, blob: Path, progress: Progress | None) -> None:
    import httpx2
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session

    blob.parent.mkdir(parents=True, exist_ok=True)
    part = blob.with_name(blob.name + ".part")
    url = hf_hub_url(repo, f.path, revision=commit, endpoint=endpoint())
    meta = get_hf_file_metadata(url, endpoint=endpoint(), retry_on_errors=True)
    location = meta.location or url
    headers = build_hf_headers()
    headers["Accept-Encoding"] = "identity"  # the Range offsets are the file's own bytes
    if _origin(location) != _origin(url):
        headers.pop("authorization", None)  # a signed CDN address: the token stays with the hub
    timeout = httpx2.Timeout(constants.HF_HUB_DOWNLOAD_TIMEOUT, connect=constants.HF_HUB_ETAG_TIMEOUT)
    with open(part, "ab") as out:
        _lock(out, part)
        last_error: Exception | None = None
        for attempt in range(TRIES):
            have = out.tell()
            if have >= f.size:
                break
            req = dict(headers)
            if have:
                req["Range"] = f"bytes={have}-"
            try:
                with get_session().stream("GET", location, headers=req, timeout=timeout,
                                          follow_redirects=True) as resp:
                    if resp.status_code == 416 and have == f.size:
                        break
                    if resp.status_code in RETRY_STATUS:
                        raise _Retry(f"HTTP {resp.status_code}")
                    if resp.status_code >= 400:
                        raise DownloadError(_http_error(repo, f.path, resp.status_code))
                    if have and resp.status_code != 206:  # the server ignored the range: start over
                        out.seek(0)
                        out.truncate()
                        have = 0
                    if progress:
                        progress(f.path, have, f.size)
                    for chunk in resp.iter_bytes():  # as received: a chunk buffer would be lost on a drop
                        out.write(chunk)
                        have += len(chunk)
                        if progress:
                            progress(f.path, have, f.size)
                out.flush()
            except (httpx2.TransportError, OSError, _Retry) as exc:
                out.flush()
                last_error = exc
                time.sleep(min(0.25 * (attempt + 1), 2.0))
                continue
        out.flush()
        have = out.tell()
    if have != f.size:
        why = f" ({last_error if isinstance(last_error, _Retry) else type(last_error).__name__})" if last_error \
            else ""
        if have > f.size:
            part.unlink(missing_ok=True)
        raise DownloadError(f"the download of {repo}/{f.path} stopped at {human(have)} of {human(f.size)}{why}: "
                            "run the same command again — it resumes from there")
    if f.sha256 is not None and _sha256(part) != f.sha256:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{repo}/{f.path} arrived damaged (its SHA-256 is not the published one): the partial "
                            "file was removed; run the same command again")
    os.replace(part, blob)


def _http_error(repo: str, path: str, status: int) -> str:
    if status in (401, 403):
        return (f"the hub refused {repo}/{path} ({status}): the repository is gated or private — accept its licence "
                "on its page and give huggingface_hub your token (`hf auth login` or HF_TOKEN)")
    return f"the hub answered {status} for {repo}/{path}: try again later"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK * 8):
            h.update(block)
    return h.hexdigest()


def _lock(fh, path: Path) -> None:
    """One writer per partial file: a second pull of the same file would interleave its bytes."""
    try:
        if sys.platform == "win32":
            import msvcrt

            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise DownloadError(f"another `aiedit models pull` is downloading {path.name}: wait for it to finish") \
            from None
