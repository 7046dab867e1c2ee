"""Versions people recognise: a checkout's short SHA, a plain folder's content hash, the ref beside them."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from orchestra.repos import checkout, content_version, ref_beside, source_version
from tests.support.sample_apps import git, plain_app, with_hotfix_branch

SHA = "3f9c2ab4e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6"


def test_a_checkout_at_a_ref_is_the_short_sha_of_that_refs_commit(tmp_path: Path) -> None:
    repo = with_hotfix_branch(plain_app(tmp_path / "repo" / "api").parent)
    checkout(str(repo), tmp_path / "hotfix", "hotfix-v2")
    checkout(str(repo), tmp_path / "main", None)
    assert source_version(tmp_path / "hotfix") == git(repo, "rev-parse", "hotfix-v2")[:7]
    assert source_version(tmp_path / "main") == git(repo, "rev-parse", "main")[:7]
    assert source_version(tmp_path / "hotfix") != source_version(tmp_path / "main")


def test_a_plain_folder_is_versioned_by_its_content(tmp_path: Path) -> None:
    folder = plain_app(tmp_path / "shop" / "api").parent
    first = content_version(folder)
    assert re.fullmatch(r"src-[0-9a-f]{7}", first)  # hex, yet never mistaken for a SHA

    checkout(str(folder), tmp_path / "run" / "shop", None)  # the run's copy, with its ready marker
    (tmp_path / "run" / "shop" / ".orchestra-ready").touch()
    assert content_version(tmp_path / "run" / "shop") == first
    for junk in ("api/__pycache__/app.cpython-311.pyc", ".pytest_cache/v/cache/nodeids", ".venv/bin/python"):
        (folder / junk).parent.mkdir(parents=True, exist_ok=True)
        (folder / junk).write_text("not code")
    assert content_version(folder) == first

    (folder / "api" / "app.py").write_text((folder / "api" / "app.py").read_text() + "# a change\n")
    changed = content_version(folder)
    assert changed != first and changed.startswith("src-")
    shutil.move(folder / "api" / "app.py", folder / "api" / "main.py")
    assert content_version(folder) not in (first, changed)  # a rename is a change too


@pytest.mark.parametrize("ref,commit,shown", [
    ("hotfix-v2", SHA, "hotfix-v2"),
    ("v1.4.2", None, "v1.4.2"),
    (None, SHA, None),
    ("", SHA, None),
    (SHA, SHA, None),  # a push or a pull request names its commit: nothing to add
    (SHA[:7], SHA, None),
    (SHA[:10].upper(), SHA, None),
    ("abcdef0", SHA, "abcdef0"),  # hex, but another commit's: it was a name
])
def test_the_ref_goes_beside_the_version_unless_it_is_the_commit(ref: str | None, commit: str | None,
                                                                 shown: str | None) -> None:
    assert ref_beside(ref, commit) == shown
