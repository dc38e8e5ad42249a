"""A Hugging Face hub stand-in on 127.0.0.1 for the pull tests: it answers the requests huggingface_hub 2.4 and
engine/models/download.py make for a few tiny repositories, and can drop a connection half way through a file.

Requests answered (read from huggingface_hub 2.4: ``HfApi.model_info``, ``file_download.get_hf_file_metadata``,
``file_download.http_get``):
- ``GET /api/models/<org>/<name>/revision/main?blobs=true`` → ``{"id", "sha", "siblings": [{"rfilename", "size",
  "blobId", "lfs": {"sha256", "size", "pointerSize"}}]}``;
- ``HEAD /<org>/<name>/resolve/<commit>/<path>`` → ``X-Repo-Commit``, ``ETag`` (``X-Linked-Etag`` and
  ``X-Linked-Size`` for LFS files), ``Content-Length``;
- ``GET`` of the same address, honouring ``Range: bytes=N-`` with ``206`` and ``Content-Range``.
Anything else is a 404. Every request is logged (method, path, range, bytes of body sent, whether it carried an
``Authorization`` header and which).
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

COMMIT = "c0ffee" + "0" * 34


@dataclass
class Hit:
    method: str
    repo: str
    path: str
    range: str | None
    sent: int
    auth: str | None


@dataclass
class FakeHub:
    repos: dict[str, dict[str, bytes]]
    lfs_suffixes: tuple[str, ...] = (".safetensors",)
    drop_at: dict[tuple[str, str], int] = field(default_factory=dict)  # drop the first GET after N bytes
    broken: set[tuple[str, str]] = field(default_factory=set)  # answer 503 to GETs of these
    fail_after_drop: set[tuple[str, str]] = field(default_factory=set)  # broken once their drop has happened
    log: list[Hit] = field(default_factory=list)

    def start(self) -> str:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                hub._serve(self, head=False)

            def do_HEAD(self) -> None:
                hub._serve(self, head=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    # -- what it serves ----------------------------------------------------------------------------------------------

    def is_lfs(self, path: str) -> bool:
        return path.endswith(self.lfs_suffixes)

    @staticmethod
    def blob_id(data: bytes) -> str:
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def info(self, repo: str) -> dict:
        siblings = []
        for path, data in self.repos[repo].items():
            s = {"rfilename": path, "size": len(data), "blobId": self.blob_id(data)}
            if self.is_lfs(path):
                s["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            siblings.append(s)
        return {"id": repo, "modelId": repo, "sha": COMMIT, "private": False, "siblings": siblings}

    def hits(self, method: str, repo: str | None = None, path: str | None = None) -> list[Hit]:
        return [h for h in self.log if h.method == method and (repo is None or h.repo == repo)
                and (path is None or h.path == path)]

    def _serve(self, req: BaseHTTPRequestHandler, head: bool) -> None:
        url = urlparse(req.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        auth = req.headers.get("Authorization")
        rng = req.headers.get("Range")
        if len(parts) == 6 and parts[:2] == ["api", "models"] and parts[4] == "revision":
            repo = f"{parts[2]}/{parts[3]}"
            self.log.append(Hit(req.command, repo, "<info>", None, 0, auth))
            if repo not in self.repos:
                return self._send(req, 404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"},
                                  head)
            return self._send(req, 200, json.dumps(self.info(repo)).encode(), {"Content-Type": "application/json"},
                              head)
        if len(parts) >= 5 and parts[2] == "resolve":
            repo, path = f"{parts[0]}/{parts[1]}", "/".join(parts[4:])
            data = self.repos.get(repo, {}).get(path)
            hit = Hit(req.command, repo, path, rng, 0, auth)
            self.log.append(hit)
            if data is None:
                return self._send(req, 404, b"not found", {"X-Error-Code": "EntryNotFound"}, head)
            headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{self.blob_id(data)}"', "Accept-Ranges": "bytes"}
            if self.is_lfs(path):
                headers["X-Linked-Etag"] = f'"{hashlib.sha256(data).hexdigest()}"'
                headers["X-Linked-Size"] = str(len(data))
            if head:
                return self._send(req, 200, data, headers, head=True)
            if (repo, path) in self.broken:
                return self._send(req, 503, b"unavailable", {}, head)
            start, status = 0, 200
            if rng and rng.startswith("bytes="):
                start = int(rng[len("bytes="):].split("-")[0])
                status = 206
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start:]
            drop = self.drop_at.pop((repo, path), None)
            if drop is not None and (repo, path) in self.fail_after_drop:
                self.broken.add((repo, path))
            hit.sent = self._send(req, status, body, headers, head=False, stop_after=drop)
            return None
        self.log.append(Hit(req.command, "?", url.path, rng, 0, auth))
        return self._send(req, 404, b"not found", {}, head)

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict, head: bool,
              stop_after: int | None = None) -> int:
        req.send_response(status)
        for k, v in headers.items():
            req.send_header(k, v)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if head:
            return 0
        if stop_after is None:
            req.wfile.write(body)
            return len(body)
        req.wfile.write(body[:stop_after])  # then the connection drops mid-body
        req.wfile.flush()
        req.close_connection = True
        try:
            req.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return stop_after
