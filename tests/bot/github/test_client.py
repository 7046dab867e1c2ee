"""The GitHub REST client against the local GitHub server: calls, pagination, retries, rate limits."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bot.github.client import GitHubClient, GitHubError, RateLimited, can_write
from tests.support.fake_github import FakeGitHub, fake_github
from tests.support.services import free_port

REPO = "Codertocat/Hello-World"


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with fake_github() as fake:
        yield fake


class Sleeps:
    """Records the waits the client asks for instead of waiting them."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def run(gh: FakeGitHub, calls: Any, **options: Any) -> Any:
    async def go() -> Any:
        async with GitHubClient(gh.token, base_url=gh.url, **options) as client:
            return await calls(client)
    return asyncio.run(go())


def test_comments_are_created_listed_across_pages_and_updated(gh: FakeGitHub) -> None:
    gh.per_page_cap = 2

    async def calls(client: GitHubClient) -> list[dict[str, Any]]:
        created = [await client.create_comment(REPO, 7, f"comment {i}") for i in range(5)]
        await client.update_comment(REPO, created[3]["id"], "edited")
        return await client.issue_comments(REPO, 7)

    comments = run(gh, calls)
    assert [c["body"] for c in comments] == ["comment 0", "comment 1", "comment 2", "edited", "comment 4"]
    assert len(gh.calls_to("GET", f"/repos/{REPO}/issues/7/comments")) == 3  # pages of 2, 2, 1
    assert gh.calls[0].headers["Authorization"] == "Bearer ghp-test-token"


def test_status_permission_contents_and_pull_files(gh: FakeGitHub) -> None:
    gh.permissions[(REPO, "alice")] = "maintain"
    gh.contents[(REPO, "devops_orchestra.yaml", "abc123")] = "project: shop\n" * 20
    gh.add_pull(REPO, 3, sha="abc123", files=["frontend/app.js", "README.md"])

    async def calls(client: GitHubClient) -> tuple[Any, ...]:
        await client.set_status(REPO, "abc123", "pending", context="orchestra/validate",
                                description="x" * 300)
        return (await client.permission(REPO, "alice"), await client.permission(REPO, "mallory"),
                await client.file_text(REPO, "devops_orchestra.yaml", "abc123"),
                await client.file_text(REPO, "missing.yaml", "abc123"), await client.pull_files(REPO, 3))

    alice, mallory, text, missing, files = run(gh, calls)
    assert (alice, mallory, missing) == ("maintain", "none", None)
    assert can_write(alice) and not can_write(mallory) and not can_write("read")
    assert text == "project: shop\n" * 20
    assert files == ["frontend/app.js", "README.md"]
    assert gh.status_states(REPO, "abc123") == [("orchestra/validate", "pending")]
    assert len(gh.statuses[(REPO, "abc123")][0]["description"]) == 140


def test_server_errors_are_retried_with_backoff_for_idempotent_calls(gh: FakeGitHub) -> None:
    gh.fail_next("GET", f"/repos/{REPO}/pulls/4", 502, times=2)
    gh.add_pull(REPO, 4, sha="def456")
    sleeps = Sleeps()
    pull = run(gh, lambda c: c.pull(REPO, 4), sleep=sleeps, backoff_s=0.5)
    assert pull["head"]["sha"] == "def456"
    assert sleeps.waits == [0.5, 1.0]


def test_creating_a_comment_is_not_retried_on_a_server_error(gh: FakeGitHub) -> None:
    gh.fail_next("POST", f"/repos/{REPO}/issues/1/comments", 502)
    sleeps = Sleeps()
    with pytest.raises(GitHubError) as err:
        run(gh, lambda c: c.create_comment(REPO, 1, "hello"), sleep=sleeps)
    assert err.value.status == 502 and sleeps.waits == []
    assert gh.comment_bodies(REPO, 1) == []


def test_retry_after_is_honoured_for_secondary_rate_limits(gh: FakeGitHub) -> None:
    gh.fail_next("POST", f"/repos/{REPO}/issues/1/comments", 403, headers={"Retry-After": "7"},
                 body={"message": "You have exceeded a secondary rate limit"})
    sleeps = Sleeps()
    run(gh, lambda c: c.create_comment(REPO, 1, "hello"), sleep=sleeps)
    assert sleeps.waits == [7.0]
    assert gh.comment_bodies(REPO, 1) == ["hello"]


def test_spent_primary_limit_waits_until_the_reset(gh: FakeGitHub) -> None:
    now = 1_800_000_000.25  # the client's clock, stopped: the wait depends on nothing else
    gh.fail_next("GET", f"/repos/{REPO}/pulls/9", 403,
                 headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(now) + 5)},
                 body={"message": "API rate limit exceeded"})
    gh.add_pull(REPO, 9, sha="aaa")
    sleeps = Sleeps()
    run(gh, lambda c: c.pull(REPO, 9), sleep=sleeps, clock=lambda: now)
    assert sleeps.waits == [5.75]  # until the reset (4.75 s away), plus a second for GitHub's rounding


def test_a_reset_beyond_the_wait_budget_raises_rate_limited(gh: FakeGitHub) -> None:
    gh.fail_next("GET", f"/repos/{REPO}/pulls/9", 403,
                 headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()) + 900)},
                 body={"message": "API rate limit exceeded"})
    sleeps = Sleeps()
    with pytest.raises(RateLimited) as err:
        run(gh, lambda c: c.pull(REPO, 9), sleep=sleeps, max_wait_s=60)
    assert err.value.wait_s > 800 and sleeps.waits == []
    assert "rate limit" in str(err.value)


def test_a_spent_budget_makes_the_next_call_wait_before_sending(gh: FakeGitHub) -> None:
    gh.rate_remaining = 1  # the first answer says 0 left
    gh.add_pull(REPO, 5, sha="bbb")
    sleeps = Sleeps()

    async def calls(client: GitHubClient) -> None:
        await client.pull(REPO, 5)
        assert sleeps.waits == []
        await client.pull(REPO, 5)

    run(gh, calls, sleep=sleeps, max_wait_s=4000)
    assert len(sleeps.waits) == 1 and sleeps.waits[0] > 3000


def test_bad_credentials_are_a_clear_error(gh: FakeGitHub) -> None:
    async def go() -> None:
        async with GitHubClient("wrong", base_url=gh.url) as client:
            await client.pull(REPO, 1)
    with pytest.raises(GitHubError, match="401: Bad credentials"):
        asyncio.run(go())


def test_an_unreachable_api_fails_after_the_retries() -> None:
    sleeps = Sleeps()

    async def go() -> None:
        async with GitHubClient("t", base_url=f"http://127.0.0.1:{free_port()}", sleep=sleeps) as client:
            await client.pull(REPO, 1)
    with pytest.raises(GitHubError, match="unreachable"):
        asyncio.run(go())
    assert sleeps.waits == [0.5, 1.0, 2.0]


def test_a_secondary_limit_without_retry_after_waits_a_minute(gh: FakeGitHub) -> None:
    gh.fail_next("POST", f"/repos/{REPO}/issues/1/comments", 403,
                 body={"message": "You have exceeded a secondary rate limit. Please wait a few minutes."})
    sleeps = Sleeps()
    run(gh, lambda c: c.create_comment(REPO, 1, "hello"), sleep=sleeps)
    assert sleeps.waits == [60.0] and gh.comment_bodies(REPO, 1) == ["hello"]


def test_a_plain_403_is_a_permission_error_not_a_retry(gh: FakeGitHub) -> None:
    gh.fail_next("POST", f"/repos/{REPO}/statuses/abc", 403, body={"message": "Resource not accessible by integration"})
    sleeps = Sleeps()
    with pytest.raises(GitHubError, match="403: Resource not accessible") as err:
        run(gh, lambda c: c.set_status(REPO, "abc", "success", context="x", description="y"), sleep=sleeps)
    assert not isinstance(err.value, RateLimited) and sleeps.waits == []
