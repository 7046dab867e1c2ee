"""A version a person names for a rollback: the version itself, a longer SHA, or the ref it came from."""
from __future__ import annotations

import pytest
from redis import Redis

from agents.deploy.targets.state import Release, record_release, resolve_version

SHA = "3f9c2ab4e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6"


def _release(version: str, ref: str | None) -> Release:
    return Release(version=version, ref=ref, image=f"reg/shop-api:{version}", port=41000,
                   container=f"orchestra-api-staging-{version}", run_id=f"r-{version}")


@pytest.mark.parametrize("name,version", [
    ("3f9c2ab", "3f9c2ab"),
    ("src-1a2b3c4", "src-1a2b3c4"),
    ("hotfix-v2", "3f9c2ab"),
    ("main", "5192ac9"),  # the newest release deployed from main
    (SHA, "3f9c2ab"),
    (SHA[:10].upper(), "3f9c2ab"),
    ("3f9c2a", "3f9c2a"),  # shorter than a version: not a name of it, the target says so
    ("v9", "v9"),
])
def test_a_rollback_version_may_be_named_by_its_sha_or_its_ref(redis: Redis, name: str, version: str) -> None:
    for release in (_release("aaa1111", "main"), _release("src-1a2b3c4", None), _release("3f9c2ab", "hotfix-v2"),
                    _release("5192ac9", "main")):
        record_release(redis, "api", "staging", release)
    assert resolve_version(redis, "api", "staging", name) == version

