"""A tiny local stand-in for the Hugging Face Hub, for tests (127.0.0.1, random port).

It speaks the part of the hub protocol that the installed ``huggingface_hub`` uses for
``hf_hub_download`` and for ``HfApi.create_repo`` + ``upload_folder``:

* ``HEAD``/``GET /{repo_id}/resolve/{revision}/{path}`` -> file bytes with ``X-Repo-Commit``,
  ``ETag`` (the sha256 of the served bytes, quoted, as the hub does for LFS files) and
  ``Content-Length``; ``Range: bytes=a-b`` gives 206. Errors carry ``X-Error-Code``
  (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) like the hub.
* ``GET /api/models/{repo_id}[/revision/{rev}]`` -> minimal model info (id, sha, siblings).
* ``POST /api/repos/create`` (409 if the repo exists), ``POST /api/validate-yaml``,
  ``POST /api/models/{repo_id}/preupload/{rev}`` (every file is answered ``"regular"``, so the
  client inlines it base64 in the commit: no LFS/Xet storage needed), and
  ``POST /api/models/{repo_id}/commit/{rev}`` (ndjson: header, file, deletedFile).

State is plain dicts: ``repos[repo_id][commit][path] = bytes`` and ``refs[repo_id]["main"]``;
tests may edit them (e.g. corrupt a file) while the server runs. ``token`` (optional) is
required as ``Authorization: Bearer <token>`` on write calls. ``requests`` logs (method, path).

    with LocalHub() as endpoint:   # e.g. "http://127.0.0.1:41233"
        ...                        # HF_ENDPOINT=endpoint in a subprocess
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Union
from urllib.parse import unquote, urlsplit

FileData = Union[bytes, str, Path]

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
_WRITE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<op>preupload|commit)/(?P<rev>[^/]+)$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the hub calls the oid of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class LocalHub:
    """In-memory hub; start()/stop() or use as a context manager (yields the endpoint URL)."""

    def __init__(self, token: str | None = None) -> None:
        self.repos: dict[str, dict[str, dict[str, bytes]]] = {}
        self.refs: dict[str, dict[str, str]] = {}
        self.private: dict[str, bool] = {}
        self.token = token
        self.requests: list[tuple[str, str]] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None
        self._n = 0
        self._lock = threading.Lock()

    # -- state ---------------------------------------------------------------------------
    def create_repo(self, repo_id: str, private: bool = False) -> bool:
        """Create an empty repo; False if it already exists."""
        with self._lock:
            if repo_id in self.repos:
                return False
            self.repos[repo_id] = {}
            self.refs[repo_id] = {}
            self.private[repo_id] = private
            return True

    def add_commit(
        self,
        repo_id: str,
        files: Mapping[str, FileData | None],
        commit: str | None = None,
        revision: str = "main",
    ) -> str:
        """Commit ``files`` (path -> bytes/str/local Path; None deletes) on top of ``revision``."""
        self.create_repo(repo_id)
        with self._lock:
            parent = self.refs[repo_id].get(revision)
            tree = dict(self.repos[repo_id][parent]) if parent else {}
            for path, data in files.items():
                if data is None:
                    tree.pop(path, None)
                else:
                    tree[path] = (
                        Path(data).read_bytes()
                        if isinstance(data, Path)
                        else (data.encode() if isinstance(data, str) else bytes(data))
                    )
            self._n += 1
            commit = commit or hashlib.sha1(f"{repo_id}|{parent}|{self._n}".encode()).hexdigest()
            self.repos[repo_id][commit] = tree
            self.refs[repo_id][revision] = commit
            return commit

    def add_folder(self, repo_id: str, folder: str | Path, commit: str | None = None) -> str:
        """Commit every file under ``folder`` (relative POSIX paths)."""
        root = Path(folder)
        files = {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}
        return self.add_commit(repo_id, files, commit=commit)

    def commit_of(self, repo_id: str, revision: str = "main") -> str | None:
        """Commit hash of a branch name or a known commit (None if unknown)."""
        commits = self.repos.get(repo_id, {})
        if revision in commits:
            return revision
        return self.refs.get(repo_id, {}).get(revision)

    # -- server --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The endpoint; still the same (now dead) URL after stop()."""
        assert self._url is not None, "server never started"
        return self._url

    def start(self) -> str:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        host, port = self._httpd.server_address[:2]
        self._url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self._url

    def stop(self) -> None:
        """Shut the server down; its port then refuses connections ("hub unreachable")."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    hub: LocalHub
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    # -- helpers -------------------------------------------------------------------------
    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, status: int, obj: object, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> None:
        h = dict(headers or {})
        if code:
            h["X-Error-Code"] = code
        h["X-Error-Message"] = message
        self._json(status, {"error": message}, h)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _authorized(self) -> bool:
        token = self.hub.token
        if token is None or self.headers.get("Authorization") == f"Bearer {token}":
            return True
        self._error(401, None, "Invalid credentials in Authorization header")
        return False

    def _repo_commit(self, repo: str, rev: str) -> str | None:
        """Commit for repo@rev, or None after answering 404 with the hub's error code."""
        if repo not in self.hub.repos:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        commit = self.hub.commit_of(repo, rev)
        if commit is None:
            self._error(404, "RevisionNotFound", "Invalid rev id: " + rev)
        return commit

    # -- verbs ---------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        self.hub.requests.append((self.command, path))
        if self.command in ("HEAD", "GET") and (m := _RESOLVE.match(path)):
            return self._resolve(m["repo"], unquote(m["rev"]), unquote(m["path"]))
        if self.command == "GET" and (m := _INFO.match(path)):
            return self._info(m["repo"], unquote(m["rev"] or "main"))
        if self.command == "POST" and path == "/api/repos/create":
            return self._create_repo()
        if self.command == "POST" and path == "/api/validate-yaml":
            self._body()
            return self._json(200, {"errors": [], "warnings": []})
        if self.command == "POST" and (m := _WRITE.match(path)):
            if not self._authorized():
                return None
            if m["op"] == "preupload":
                return self._preupload(m["repo"], unquote(m["rev"]))
            return self._commit(m["repo"], unquote(m["rev"]))
        self._error(404, None, f"not implemented by the local test hub: {self.command} {path}")

    def _resolve(self, repo: str, rev: str, file: str) -> None:
        commit = self._repo_commit(repo, rev)
        if commit is None:
            return
        data = self.hub.repos[repo][commit].get(file)
        if data is None:
            return self._error(404, "EntryNotFound", f"{file} does not exist", {"X-Repo-Commit": commit})
        headers = {
            "X-Repo-Commit": commit,
            "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
            "Accept-Ranges": "bytes",
        }
        status, body = 200, data
        rng = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if rng:
            start = int(rng[1])
            end = min(int(rng[2]) if rng[2] else len(data) - 1, len(data) - 1)
            if start >= len(data):
                return self._error(416, None, "range not satisfiable")
            status, body = 206, data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        self._send(status, body, headers, content_type="application/octet-stream")

    def _info(self, repo: str, rev: str) -> None:
        commit = self._repo_commit(repo, rev)
        if commit is None:
            return
        files = sorted(self.hub.repos[repo][commit])
        self._json(
            200,
            {
                "id": repo,
                "modelId": repo,
                "sha": commit,
                "private": self.hub.private[repo],
                "siblings": [{"rfilename": f} for f in files],
            },
        )

    def _create_repo(self) -> None:
        payload = json.loads(self._body() or b"{}")
        if not self._authorized():
            return
        repo = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        url = f"{self.hub.url}/{repo}"
        if not self.hub.create_repo(repo, private=payload.get("visibility") == "private"):
            msg = "You already created this model repo"  # the hub's 409 body still carries the url
            return self._json(409, {"error": msg, "url": url}, {"X-Error-Message": msg})
        self._json(200, {"url": url, "name": repo})

    def _preupload(self, repo: str, rev: str) -> None:
        payload = json.loads(self._body() or b"{}")
        if repo not in self.hub.repos:
            return self._error(404, "RepoNotFound", "Repository not found")
        commit = self.hub.commit_of(repo, rev)
        tree = self.hub.repos[repo].get(commit, {}) if commit else {}
        files = []
        for f in payload.get("files", []):
            old = tree.get(f["path"])
            files.append(
                {
                    "path": f["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_sha1(old) if old is not None else None,
                }
            )
        self._json(200, {"files": files, "commitOid": commit})

    def _commit(self, repo: str, rev: str) -> None:
        lines = [json.loads(x) for x in self._body().splitlines() if x.strip()]
        if repo not in self.hub.repos:
            return self._error(404, "RepoNotFound", "Repository not found")
        changes: dict[str, bytes | None] = {}
        for item in lines:
            key, value = item["key"], item["value"]
            if key == "header":
                continue
            if key == "file":
                changes[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                changes[value["path"]] = None
            else:
                return self._error(400, None, f"local test hub does not support {key!r} operations")
        commit = self.hub.add_commit(repo, changes, revision=rev)
        self._json(
            200,
            {
                "commitUrl": f"{self.hub.url}/{repo}/commit/{commit}",
                "commitOid": commit,
                "success": True,
                "pullRequestUrl": None,
            },
        )
