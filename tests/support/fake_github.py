"""A local server speaking the GitHub REST shapes the bot uses; it records every call.

Routes: issue comments (list with Link pagination, create, update), commit statuses,
collaborator permission, contents, pulls and pulls/files. ``fail_next`` scripts
answers (5xx, rate limits) for the next matching calls. Runs in its own thread.
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.services import free_port


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


@dataclass
class Scripted:
    method: str
    path_prefix: str
    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class FakeGitHub:
    """State of the fake: tests set permissions, contents and pulls, and read comments/statuses."""

    token: str | None = "ghp-test-token"
    per_page_cap: int = 100
    permissions: dict[tuple[str, str], str] = field(default_factory=dict)
    contents: dict[tuple[str, str, str], str] = field(default_factory=dict)
    pulls: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    pull_files: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    comments: dict[tuple[str, int], list[dict[str, Any]]] = field(default_factory=dict)
    statuses: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    scripted: list[Scripted] = field(default_factory=list)
    rate_remaining: int = 5000
    url: str = ""
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1000))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- test helpers ------------------------------------------------------------------------

    def fail_next(self, method: str, path_prefix: str, status: int, *, headers: dict[str, str] | None = None,
                  body: Any = None, times: int = 1) -> None:
        """The next ``times`` calls matching method and path prefix get this answer instead."""
        for _ in range(times):
            self.scripted.append(Scripted(method, path_prefix, status, headers or {},
                                          body if body is not None else {"message": f"scripted {status}"}))

    def add_pull(self, repo: str, number: int, *, sha: str, head_repo: str | None = None,
                 ref: str = "feature", files: list[str] | None = None) -> None:
        self.pulls[(repo, number)] = {
            "number": number, "state": "open",
            "head": {"sha": sha, "ref": ref, "repo": {"full_name": head_repo or repo}},
            "base": {"ref": "main", "repo": {"full_name": repo}}}
        self.pull_files[(repo, number)] = list(files or [])

    def calls_to(self, method: str, path_prefix: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method and c.path.startswith(path_prefix)]

    def comment_bodies(self, repo: str, number: int) -> list[str]:
        with self._lock:
            return [c["body"] for c in self.comments.get((repo, number), [])]

    def status_states(self, repo: str, sha: str) -> list[tuple[str, str]]:
        with self._lock:
            return [(s["context"], s["state"]) for s in self.statuses.get((repo, sha), [])]

    # -- the server -----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_get("/repos/{owner}/{name}/issues/{number:\\d+}/comments", self._list_comments)
        r.add_post("/repos/{owner}/{name}/issues/{number:\\d+}/comments", self._create_comment)
        r.add_patch("/repos/{owner}/{name}/issues/comments/{id:\\d+}", self._update_comment)
        r.add_post("/repos/{owner}/{name}/statuses/{sha}", self._create_status)
        r.add_get("/repos/{owner}/{name}/collaborators/{user}/permission", self._permission)
        r.add_get("/repos/{owner}/{name}/contents/{path:.+}", self._contents)
        r.add_get("/repos/{owner}/{name}/pulls/{number:\\d+}", self._pull)
        r.add_get("/repos/{owner}/{name}/pulls/{number:\\d+}/files", self._pull_files)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        with self._lock:
            self.calls.append(Call(request.method, request.path, dict(request.query), body,
                                   dict(request.headers)))
            scripted = self._take_scripted(request)
        if scripted is not None:
            return web.json_response(scripted.body, status=scripted.status,
                                     headers={**self._rate_headers(), **scripted.headers})
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"message": "Bad credentials"}, status=401)
        response = await handler(request)
        response.headers.update(self._rate_headers())
        return response

    def _take_scripted(self, request: web.Request) -> Scripted | None:
        for i, s in enumerate(self.scripted):
            if s.method == request.method and request.path.startswith(s.path_prefix):
                return self.scripted.pop(i)
        return None

    def _rate_headers(self) -> dict[str, str]:
        self.rate_remaining = max(0, self.rate_remaining - 1)
        return {"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": str(self.rate_remaining),
                "X-RateLimit-Reset": str(int(time.time()) + 3600), "X-RateLimit-Used": "1"}

    @staticmethod
    def _repo(request: web.Request) -> str:
        return f"{request.match_info['owner']}/{request.match_info['name']}"

    def _page(self, request: web.Request, items: list[Any]) -> web.Response:
        per_page = min(int(request.query.get("per_page", "30")), self.per_page_cap)
        page = int(request.query.get("page", "1"))
        chunk = items[(page - 1) * per_page: page * per_page]
        headers = {}
        if page * per_page < len(items):
            nxt = request.url.update_query(page=str(page + 1), per_page=str(per_page))
            headers["Link"] = f'<{nxt}>; rel="next"'
        return web.json_response(chunk, headers=headers)

    async def _list_comments(self, request: web.Request) -> web.Response:
        key = (self._repo(request), int(request.match_info["number"]))
        with self._lock:
            items = list(self.comments.get(key, []))
        return self._page(request, items)

    async def _create_comment(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("body"), str):
            return web.json_response({"message": "Invalid request: body is required"}, status=422)
        repo, number = self._repo(request), int(request.match_info["number"])
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        comment = {"id": next(self._ids), "body": body["body"], "user": {"login": "orchestra[bot]"},
                   "html_url": f"https://github.com/{repo}/pull/{number}", "created_at": now,
                   "updated_at": now}
        with self._lock:
            self.comments.setdefault((repo, number), []).append(comment)
        return web.json_response(comment, status=201)

    async def _update_comment(self, request: web.Request) -> web.Response:
        body = await request.json()
        comment_id = int(request.match_info["id"])
        with self._lock:
            for (repo, _), items in self.comments.items():
                for comment in items:
                    if comment["id"] == comment_id and repo == self._repo(request):
                        comment["body"] = body["body"]
                        return web.json_response(comment)
        return web.json_response({"message": "Not Found"}, status=404)

    async def _create_status(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("state") not in ("pending", "success", "failure", "error"):
            return web.json_response({"message": "Validation Failed: state"}, status=422)
        status = {"id": next(self._ids), "state": body["state"], "context": body.get("context", "default"),
                  "description": body.get("description"), "target_url": body.get("target_url")}
        with self._lock:
            self.statuses.setdefault((self._repo(request), request.match_info["sha"]), []).append(status)
        return web.json_response(status, status=201)

    async def _permission(self, request: web.Request) -> web.Response:
        user = request.match_info["user"]
        permission = self.permissions.get((self._repo(request), user))
        if permission is None:
            return web.json_response({"message": "Not Found"}, status=404)
        legacy = {"maintain": "write", "triage": "read"}.get(permission, permission)
        return web.json_response({"permission": legacy, "role_name": permission, "user": {"login": user}})

    async def _contents(self, request: web.Request) -> web.Response:
        key = (self._repo(request), request.match_info["path"], request.query.get("ref", "main"))
        text = self.contents.get(key)
        if text is None:
            return web.json_response({"message": "Not Found"}, status=404)
        encoded = base64.encodebytes(text.encode()).decode()  # GitHub wraps base64 at 60 columns
        return web.json_response({"type": "file", "encoding": "base64", "path": key[1], "content": encoded})

    async def _pull(self, request: web.Request) -> web.Response:
        pull = self.pulls.get((self._repo(request), int(request.match_info["number"])))
        if pull is None:
            return web.json_response({"message": "Not Found"}, status=404)
        return web.json_response(pull)

    async def _pull_files(self, request: web.Request) -> web.Response:
        files = self.pull_files.get((self._repo(request), int(request.match_info["number"])), [])
        return self._page(request, [{"filename": f, "status": "modified"} for f in files])


@contextmanager
def serve_in_thread(app: web.Application, *, name: str = "aiohttp") -> Iterator[str]:
    """Run an aiohttp application on a free loopback port in its own thread; yield its base URL."""
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner = web.AppRunner(app, access_log=None)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name=name, daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError(f"{name} server did not start within 10s")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=40)


@contextmanager
def fake_github(**state: Any) -> Iterator[FakeGitHub]:
    """Start a :class:`FakeGitHub` on a free loopback port in a thread; yield it with ``url`` set."""
    fake = FakeGitHub(**state)
    with serve_in_thread(fake.app(), name="fake-github") as url:
        fake.url = url
        yield fake
