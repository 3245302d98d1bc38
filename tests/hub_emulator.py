"""An in-process emulation of the few Hugging Face Hub endpoints that ``huggingface_hub.HfApi`` calls to publish:
create a repo, read it (``repo_info``, ``list_repo_refs``), validate a card, commit (``preupload``, the LFS batch
API with a basic PUT and a verify, the NDJSON ``commit``) and tag.

It lets tests drive huggingface_hub's real serialisation and HTTP layer (its httpx client, retries and error
mapping) with no network: ``HF_ENDPOINT=<emulator url>``. It is *our reading* of the Hub's API as huggingface_hub
2.x speaks it (URLs, methods, JSON shapes, ``X-Error-Code`` headers, 412 on a stale ``parentCommit``), not the Hub:
its validation of cards, its auth scopes, its storage (Xet, S3 multipart) are not reproduced. Every request is
recorded (``Hub.requests``); an endpoint it does not know answers 404 ``not emulated`` and is recorded as such.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
LFS_PATTERNS = ("*.safetensors", "*.bin")
LFS_SIZE = 10 * 1024 * 1024
STALE = "A commit has happened since. Please refresh and try again."


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
            f"size {len(data)}\n").encode()


@dataclass
class Commit:
    oid: str
    parent: str | None
    files: dict[str, bytes]
    lfs: set[str]
    message: str
    description: str = ""


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (commit oid, message)

    def resolve(self, rev: str) -> Commit | None:
        oid = self.branches.get(rev) or (self.tags[rev][0] if rev in self.tags else None)
        if oid is None and len(rev) >= 7:
            oid = next((o for o in self.commits if o.startswith(rev)), None)
        return self.commits.get(oid) if oid else None

    def commit(self, branch: str, files: dict[str, bytes], lfs: set[str], message: str,
               description: str = "") -> Commit:
        parent = self.commits.get(self.branches.get(branch, ""))
        new_files = {**(parent.files if parent else {}), **files}
        new_lfs = ((parent.lfs if parent else set()) - set(files)) | lfs
        oid = hashlib.sha1(json.dumps([parent.oid if parent else None, sorted(new_files), message,
                                       len(self.commits)]).encode()).hexdigest()
        c = Commit(oid, parent.oid if parent else None, new_files, new_lfs, message, description)
        self.commits[oid] = c
        self.branches[branch] = oid
        return c


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None
    body: bytes
    status: int = 0

    def json(self) -> Any:
        return json.loads(self.body)

    def ndjson(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.body.splitlines() if line.strip()]


class Hub:
    """The emulated Hub's state: repos, the LFS store, the recorded requests, the token it accepts."""

    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[Request] = []
        self.before_commit: Callable[[Repo], None] | None = None  # e.g. a concurrent push
        self.refuse: dict[str, int] = {}  # endpoint handler name -> status to answer once (a failure)
        self.lock = threading.RLock()
        self.url = ""

    def create(self, repo_id: str, *, private: bool = False) -> Repo:
        """A repo as the Hub creates it: one initial commit holding ``.gitattributes`` on ``main``."""
        repo = self.repos[repo_id] = Repo(repo_id, private)
        repo.commit("main", {".gitattributes": GITATTRIBUTES}, set(), "initial commit")
        return repo

    def calls(self, method: str | None = None, pattern: str = "") -> list[Request]:
        return [r for r in self.requests if (method is None or r.method == method) and re.search(pattern, r.path)]


def _handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    repo_re = r"(?P<repo>[^/]+/[^/]+)"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        # -------------------------------------------------------------------------------- plumbing
        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, payload: Any = None, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload if payload is not None else {}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
            self.record.status = status

        def _error(self, status: int, message: str, code: str | None = None) -> None:
            headers = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {})}
            self._send(status, {"error": message}, headers)

        def _handle(self) -> None:
            url = urlsplit(self.path)
            self.record = Request(self.command, unquote(url.path), parse_qs(url.query),
                                  self.headers.get("Authorization"), self._body())
            with hub.lock:
                hub.requests.append(self.record)
                presigned = self.command == "PUT" and url.path.startswith("/_lfs/")  # like an S3 presigned URL
                if not presigned and self.record.authorization != f"Bearer {hub.token}":
                    return self._error(401, "Invalid credentials in Authorization header")
                for method, pattern, fn in ROUTES:
                    m = re.fullmatch(pattern, url.path)
                    if m and method == self.command:
                        if fn.__name__ in hub.refuse:
                            return self._error(hub.refuse.pop(fn.__name__), f"refused: {fn.__name__}")
                        return fn(self, **{k: unquote(v) for k, v in m.groupdict().items() if v is not None})
                return self._error(404, f"not emulated: {self.command} {url.path}")

        do_GET = do_POST = do_PUT = _handle

        def _repo(self, repo: str) -> Repo | None:
            r = hub.repos.get(repo)
            if r is None:
                self._error(404, "Repository not found", "RepoNotFound")
            return r

        # ------------------------------------------------------------------------------- endpoints
        def create_repo(self) -> None:
            body = self.record.json()
            repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
            url = f"{hub.url}/{repo_id}"
            if repo_id in hub.repos:
                return self._send(409, {"error": "You already created this model repo", "url": url})
            hub.create(repo_id, private=body.get("visibility") == "private")
            self._send(200, {"url": url, "name": repo_id})

        def info(self, repo: str, rev: str = "main") -> None:
            r = self._repo(repo)
            if r is None:
                return
            c = r.resolve(rev)
            if c is None:
                return self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            blobs = "blobs" in self.record.query
            siblings = []
            for name, data in sorted(c.files.items()):
                s: dict[str, Any] = {"rfilename": name}
                if blobs:
                    lfs = name in c.lfs
                    s.update(size=len(data), blobId=git_blob_id(lfs_pointer(data) if lfs else data))
                    if lfs:
                        s["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                    "pointerSize": len(lfs_pointer(data))}
                siblings.append(s)
            self._send(200, {"id": repo, "modelId": repo, "sha": c.oid, "private": r.private,
                             "siblings": siblings, "tags": []})

        def refs(self, repo: str) -> None:
            r = self._repo(repo)
            if r is None:
                return
            self._send(200, {
                "branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": o} for b, o in r.branches.items()],
                "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": o} for t, (o, _) in r.tags.items()],
                "converts": [], "pullRequests": []})

        def validate_yaml(self) -> None:
            import yaml

            content = self.record.json()["content"]
            m = re.match(r"^---\n(.*?)\n---\n", content, re.DOTALL)
            try:
                meta = yaml.safe_load(m.group(1)) if m else None
            except yaml.YAMLError as e:
                return self._send(400, {"errors": [{"message": f"invalid YAML: {e}"}]})
            if m and not isinstance(meta, dict):
                return self._send(400, {"errors": [{"message": "metadata must be a mapping"}]})
            self._send(200, {"errors": [], "warnings": []})

        def preupload(self, repo: str, rev: str) -> None:
            r = self._repo(repo)
            if r is None:
                return
            head = r.resolve(rev)
            if head is None:
                return self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            files = []
            for f in self.record.json()["files"]:
                lfs = any(fnmatch(f["path"], p) for p in LFS_PATTERNS) or f["size"] > LFS_SIZE
                old = head.files.get(f["path"])
                oid = None if old is None else (hashlib.sha256(old).hexdigest() if f["path"] in head.lfs
                                                else git_blob_id(old))
                files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                              "oid": oid})
            self._send(200, {"files": files, "commitOid": head.oid})

        def lfs_batch(self, repo: str) -> None:
            if self._repo(repo) is None:
                return
            objects = []
            for o in self.record.json()["objects"]:
                entry: dict[str, Any] = {"oid": o["oid"], "size": o["size"]}
                if o["oid"] not in hub.lfs:
                    entry["actions"] = {"upload": {"href": f"{hub.url}/_lfs/{o['oid']}"},
                                        "verify": {"href": f"{hub.url}/_lfs/{o['oid']}/verify"}}
                objects.append(entry)
            self._send(200, {"transfer": "basic", "objects": objects})

        def lfs_put(self, oid: str) -> None:
            if hashlib.sha256(self.record.body).hexdigest() != oid:
                return self._error(400, "sha256 mismatch")
            hub.lfs[oid] = self.record.body
            self._send(200)

        def lfs_verify(self, oid: str) -> None:
            body = self.record.json()
            if oid not in hub.lfs or body["oid"] != oid or body["size"] != len(hub.lfs[oid]):
                return self._error(404, "object not uploaded")
            self._send(200)

        def commit(self, repo: str, rev: str) -> None:
            r = self._repo(repo)
            if r is None:
                return
            if rev not in r.branches:
                return self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            if hub.before_commit is not None:
                hub.before_commit(r)
            lines = self.record.ndjson()
            header = lines[0]["value"] if lines and lines[0]["key"] == "header" else {}
            parent = header.get("parentCommit")
            if parent is not None and not r.branches[rev].startswith(parent):
                return self._error(412, STALE)
            files, lfs = {}, set()
            for line in lines[1:]:
                v = line["value"]
                if line["key"] == "file":
                    files[v["path"]] = base64.b64decode(v["content"])
                elif line["key"] == "lfsFile":
                    if v["oid"] not in hub.lfs:
                        return self._error(400, f"LFS object {v['oid']} was not uploaded")
                    files[v["path"]] = hub.lfs[v["oid"]]
                    lfs.add(v["path"])
                else:
                    return self._error(400, f"not emulated: commit operation {line['key']}")
            c = r.commit(rev, files, lfs, header.get("summary", ""), header.get("description", ""))
            self._send(200, {"commitUrl": f"{hub.url}/{repo}/commit/{c.oid}", "commitOid": c.oid,
                             "success": True, "pullRequestUrl": None})

        def tag(self, repo: str, rev: str) -> None:
            r = self._repo(repo)
            if r is None:
                return
            c = r.resolve(rev)
            if c is None:
                return self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            body = self.record.json()
            if body["tag"] in r.tags:
                return self._error(409, f"Tag {body['tag']} already exists")
            r.tags[body["tag"]] = (c.oid, body.get("message", ""))
            self._send(200, {})

    ROUTES = [
        ("POST", r"/api/repos/create", Handler.create_repo),
        ("GET", rf"/api/models/{repo_re}(?:/revision/(?P<rev>[^/]+))?", Handler.info),
        ("GET", rf"/api/models/{repo_re}/refs", Handler.refs),
        ("POST", r"/api/validate-yaml", Handler.validate_yaml),
        ("POST", rf"/api/models/{repo_re}/preupload/(?P<rev>[^/]+)", Handler.preupload),
        ("POST", rf"/{repo_re}\.git/info/lfs/objects/batch", Handler.lfs_batch),
        ("PUT", r"/_lfs/(?P<oid>[0-9a-f]{64})", Handler.lfs_put),
        ("POST", r"/_lfs/(?P<oid>[0-9a-f]{64})/verify", Handler.lfs_verify),
        ("POST", rf"/api/models/{repo_re}/commit/(?P<rev>[^/]+)", Handler.commit),
        ("POST", rf"/api/models/{repo_re}/tag/(?P<rev>[^/]+)", Handler.tag),
    ]
    return Handler


@contextmanager
def serve(token: str):
    """Run an emulated Hub on 127.0.0.1 (a free port) in a thread; yields its :class:`Hub` (``hub.url``)."""
    hub = Hub(token)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="hub-emulator", daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
