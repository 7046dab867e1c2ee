"""Paths in devops_orchestra.yaml stay inside the repository: absolute, `..` and symlinks out are errors."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestra.config import CONFIG_FILENAME, load_config, validate_file
from orchestra.errors import ConfigError

CONFIG = """\
project:
  name: shop
build:
  context: {context}
  dockerfile: {build_dockerfile}
deployment:
  services:
    - name: api
      path: {path}
      dockerfile: {dockerfile}
      port: 5000
infrastructure:
  path: {infra}
"""
SAFE = {"context": ".", "build_dockerfile": "Dockerfile", "path": "api", "dockerfile": "Dockerfile",
        "infra": "infra/"}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "api").mkdir(parents=True)
    (root / "api" / "Dockerfile").write_text("FROM scratch\n")
    (root / "infra").mkdir()
    return root


def problems(repo: Path, **fields: str) -> list[str]:
    path = repo / CONFIG_FILENAME
    path.write_text(CONFIG.format(**{**SAFE, **fields}))
    found = validate_file(path)
    return [p.removeprefix(f"{path}:") for p in found]


def test_paths_inside_the_repository_are_accepted(repo: Path) -> None:
    assert problems(repo) == []
    assert load_config(repo).service_dir("api") == repo / "api"


@pytest.mark.parametrize(("field", "value", "line", "where"), [
    ("path", "/etc", 9, "deployment.services[0].path"),
    ("path", "../other-repo", 9, "deployment.services[0].path"),
    ("path", "api/../../..", 9, "deployment.services[0].path"),
    ("dockerfile", "/root/.docker/config.json", 10, "deployment.services[0].dockerfile"),
    ("dockerfile", "..\\\\..\\\\Dockerfile", 10, "deployment.services[0].dockerfile"),
    ("context", "'~/secrets'", 4, "build.context"),
    ("build_dockerfile", "../Dockerfile", 5, "build.dockerfile"),
    ("infra", "/var/lib/terraform", 13, "infrastructure.path"),
])
def test_absolute_paths_and_climbing_out_are_errors_with_line_and_field(repo: Path, field: str, value: str,
                                                                         line: int, where: str) -> None:
    [problem] = problems(repo, **{field: value})
    assert problem.startswith(f"{line}: {where}: ") and "relative to the repository's root" in problem
    assert ("absolute" in problem) or ("climbs out with `..`" in problem)


def test_a_symlink_that_leads_out_of_the_checkout_is_an_error(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "host-secrets"
    outside.mkdir()
    (outside / "Dockerfile").write_text("FROM scratch\n")
    os.symlink(outside, repo / "linked")
    os.symlink(outside / "Dockerfile", repo / "api" / "Dockerfile.out")
    os.symlink(repo / "api", repo / "inside")  # a link that stays inside is fine
    assert problems(repo, path="inside") == []
    found = problems(repo, path="linked", dockerfile="Dockerfile.out", infra="linked/tf")
    assert found == [
        "9: deployment.services[0].path: `linked` leads outside the repository through a symlink; give a path "
        "relative to the repository's root, such as `backend` or `docker/Dockerfile` that is not a link out of it",
        "10: deployment.services[0].dockerfile: `Dockerfile.out` leads outside the repository through a symlink;"
        " give a path relative to the repository's root, such as `backend` or `docker/Dockerfile` that is not a "
        "link out of it",
        "13: infrastructure.path: `linked/tf` leads outside the repository through a symlink; give a path "
        "relative to the repository's root, such as `backend` or `docker/Dockerfile` that is not a link out of it",
    ]
    with pytest.raises(ConfigError):
        load_config(repo)  # nothing runs on such a configuration


def test_a_symlink_loop_is_an_error_not_a_crash(repo: Path) -> None:
    os.symlink(repo / "loop-b", repo / "loop-a")
    os.symlink(repo / "loop-a", repo / "loop-b")
    found = problems(repo, path="loop-a")
    assert [p.split(": ")[1] for p in found] == ["deployment.services[0].path", "deployment.services[0].dockerfile"]
    assert all("cannot be resolved" in p for p in found)
