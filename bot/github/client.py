"""A small GitHub REST client on aiohttp: the calls the bot makes, with retries and rate limits.

Retries: 5xx answers and connection errors are retried with exponential backoff
(only for idempotent calls: creating a comment twice would duplicate it).
Rate limits: a 403/429 with ``Retry-After`` (secondary limits) waits that long; one
with ``X-RateLimit-Remaining: 0`` waits until ``X-RateLimit-Reset``; when the last
answer said the budget is spent, the next call waits for the reset before sending.
A wait longer than ``max_wait_s`` raises :class:`RateLimited` instead of blocking.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from orchestra.errors import OrchestraError
from orchestra.telemetry import GITHUB_CALLS

logger = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
WRITE_PERMISSIONS = frozenset({"admin", "maintain", "write"})
_NEXT_LINK = re.compile(r'<([^>]+)>;\s*rel="next"')
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE"})


class GitHubError(OrchestraError):
    """The GitHub API said no (or could not be reached)."""

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class RateLimited(GitHubError):
    """The rate limit is spent for longer than the client is willing to wait."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"GitHub rate limit reached; it resets in {int(wait_s)}s", status=403,
                         hint="try again later, or use a token with a larger budget")
        self.wait_s = wait_s


class GitHubClient:
    """The GitHub REST calls the bot needs. Create it inside a running event loop's task."""

    def __init__(self, token: str | None, *, base_url: str = DEFAULT_API_URL,
                 session: aiohttp.ClientSession | None = None, max_attempts: int = 4,
                 backoff_s: float = 0.5, max_wait_s: float = 60.0, timeout_s: float = 15.0,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self._sleep = sleep
        self._clock = clock
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session = session
        self._own_session = session is None
        self._exhausted_until = 0.0

    async def __aenter__(self) -> GitHubClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- the API ---------------------------------------------------------------------------

    async def issue_comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        """All comments on an issue or pull request, oldest first."""
        return await self.paginate(f"/repos/{repo}/issues/{number}/comments")

    async def create_comment(self, repo: str, number: int, body: str) -> dict[str, Any]:
        return await self.request("POST", f"/repos/{repo}/issues/{number}/comments", json={"body": body})

    async def update_comment(self, repo: str, comment_id: int, body: str) -> dict[str, Any]:
        return await self.request("PATCH", f"/repos/{repo}/issues/comments/{comment_id}",
                                  json={"body": body})

    async def set_status(self, repo: str, sha: str, state: str, *, context: str,
                         description: str, target_url: str | None = None) -> dict[str, Any]:
        """Set a commit status (pending, success, failure, error); the newest per context wins."""
        body = {"state": state, "context": context, "description": description[:140]}
        if target_url:
            body["target_url"] = target_url
        return await self.request("POST", f"/repos/{repo}/statuses/{sha}", json=body, idempotent=True)

    async def permission(self, repo: str, user: str) -> str:
        """The user's permission on the repository ('none' when GitHub does not know them)."""
        try:
            data = await self.request("GET", f"/repos/{repo}/collaborators/{user}/permission")
        except GitHubError as exc:
            if exc.status == 404:
                return "none"
            raise
        return str(data.get("role_name") or data.get("permission") or "none")

    async def file_text(self, repo: str, path: str, ref: str) -> str | None:
        """A file's text at ``ref``, or None when it does not exist there."""
        try:
            data = await self.request("GET", f"/repos/{repo}/contents/{path}", params={"ref": ref})
        except GitHubError as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(data, dict) or data.get("type") != "file":
            return None
        return base64.b64decode(data.get("content", "")).decode("utf-8", errors="replace")

    async def pull(self, repo: str, number: int) -> dict[str, Any]:
        return await self.request("GET", f"/repos/{repo}/pulls/{number}")

    async def pull_files(self, repo: str, number: int) -> list[str]:
        """Paths changed by a pull request (renames count under both names)."""
        files = await self.paginate(f"/repos/{repo}/pulls/{number}/files")
        paths = [str(f["filename"]) for f in files]
        paths += [str(f["previous_filename"]) for f in files if f.get("previous_filename")]
        return paths

    # -- transport -------------------------------------------------------------------------

    async def paginate(self, path: str, *, per_page: int = 100) -> list[dict[str, Any]]:
        """Follow ``Link: rel="next"`` and concatenate the pages."""
        items: list[dict[str, Any]] = []
        url: str | None = self._url(path)
        params: dict[str, Any] | None = {"per_page": per_page}
        while url is not None:
            page, headers = await self._call("GET", url, params=params, idempotent=True)
            items.extend(page)
            match = _NEXT_LINK.search(headers.get("Link", ""))
            url, params = (match.group(1), None) if match else (None, None)
        return items

    async def request(self, method: str, path: str, *, json: Any = None,
                      params: dict[str, Any] | None = None, idempotent: bool | None = None) -> Any:
        """One API call; returns the decoded JSON body."""
        safe = method in _IDEMPOTENT if idempotent is None else idempotent
        data, _ = await self._call(method, self._url(path), json=json, params=params, idempotent=safe)
        return data

    async def _call(self, method: str, url: str, *, json: Any = None,
                    params: dict[str, Any] | None = None, idempotent: bool) -> tuple[Any, Any]:
        for attempt in range(1, self.max_attempts + 1):
            await self._wait_for_budget()
            try:
                async with self._http().request(method, url, json=json, params=params,
                                                headers=self._headers()) as resp:
                    GITHUB_CALLS.labels(str(resp.status)).inc()
                    self._note_budget(resp.headers)
                    body = await resp.json(content_type=None) if resp.status != 204 else None
                    wait = self._retry_wait(resp.status, resp.headers, body, attempt, idempotent)
                    if wait is None:
                        return self._result(method, url, resp.status, body), resp.headers
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                GITHUB_CALLS.labels("error").inc()
                if not idempotent or attempt == self.max_attempts:
                    raise GitHubError(f"GitHub API unreachable: {method} {url}: {exc!r}") from exc
                wait = self._backoff(attempt)
            logger.warning("GitHub %s %s: retrying in %.1fs (attempt %d)", method, url, wait, attempt)
            await self._sleep(wait)
            self._exhausted_until = 0.0  # waited already; the next answer says what is left
        raise GitHubError(f"GitHub API {method} {url} still failing after {self.max_attempts} attempts")

    def _retry_wait(self, status: int, headers: Any, body: Any, attempt: int,
                    idempotent: bool) -> float | None:
        """How long to wait before retrying, or None to return (or raise) this answer."""
        if attempt >= self.max_attempts:
            return None
        if status in (403, 429):
            wait = self._rate_limit_wait(status, headers, body, attempt)
            if wait is not None and wait > self.max_wait_s:
                raise RateLimited(wait)
            return wait
        if status >= 500 and idempotent:
            return self._backoff(attempt)
        return None

    def _rate_limit_wait(self, status: int, headers: Any, body: Any, attempt: int) -> float | None:
        retry_after = headers.get("Retry-After")
        if retry_after is not None and retry_after.strip().isdigit():
            return float(retry_after)
        if headers.get("X-RateLimit-Remaining") == "0" and headers.get("X-RateLimit-Reset"):
            return max(0.0, float(headers["X-RateLimit-Reset"]) - self._clock()) + 1.0
        message = str(body.get("message", "")) if isinstance(body, dict) else ""
        if status == 429 or "secondary rate limit" in message.lower():
            return 60.0 * attempt  # GitHub: wait at least a minute when no Retry-After is given
        return None  # a plain 403: no permission

    def _result(self, method: str, url: str, status: int, body: Any) -> Any:
        if status < 400:
            return body
        message = body.get("message", "") if isinstance(body, dict) else str(body)[:200]
        if status in (403, 429) and self._is_rate_limited(message):
            raise RateLimited(max(0.0, self._exhausted_until - self._clock()))
        raise GitHubError(f"GitHub API {method} {url} answered {status}: {message}", status=status)

    def _is_rate_limited(self, message: str) -> bool:
        return "rate limit" in message.lower() or self._exhausted_until > self._clock()

    def _note_budget(self, headers: Any) -> None:
        if headers.get("X-RateLimit-Remaining") == "0" and headers.get("X-RateLimit-Reset"):
            self._exhausted_until = float(headers["X-RateLimit-Reset"])
        elif headers.get("X-RateLimit-Remaining"):
            self._exhausted_until = 0.0

    async def _wait_for_budget(self) -> None:
        wait = self._exhausted_until - self._clock()
        if wait <= 0:
            return
        if wait > self.max_wait_s:
            raise RateLimited(wait)
        logger.warning("GitHub rate limit spent: waiting %.1fs for the reset", wait)
        await self._sleep(wait + 1.0)

    def _backoff(self, attempt: int) -> float:
        return min(self.max_wait_s, self.backoff_s * 2 ** (attempt - 1))

    def _url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.base_url}{path}"

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION,
                   "User-Agent": "devops-orchestra"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session


def can_write(permission: str) -> bool:
    """True for the permissions that may deploy (admin, maintain, write)."""
    return permission in WRITE_PERMISSIONS
