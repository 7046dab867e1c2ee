"""Paths in the configuration stay inside the repository: relative, no ``..``, no symlink that leads out.

The model refuses absolute paths and ``..`` by themselves (:func:`check_repo_path`); whether a
path resolves through a symlink to somewhere outside the checkout needs the checkout, so the
loader asks :func:`escaping_paths` once the file is read.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Annotated, Any

from pydantic import AfterValidator

Loc = tuple[str | int, ...]
_HINT = "give a path relative to the repository's root, such as `backend` or `docker/Dockerfile`"


def check_repo_path(value: str) -> str:
    """A path the repository owns: not absolute, no ``..`` part, no NUL."""
    if "\x00" in value:
        raise ValueError("contains a NUL character; " + _HINT)
    if PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute() or value.startswith("~"):
        raise ValueError(f"`{value}` is an absolute path; {_HINT}")
    if ".." in PurePosixPath(value.replace("\\", "/")).parts:
        raise ValueError(f"`{value}` climbs out with `..`; {_HINT}")
    return value


def escaping_paths(data: dict[str, Any], repo_dir: Path) -> list[tuple[Loc, str]]:
    """Every configured path that resolves (through a symlink) outside ``repo_dir``, with its location."""
    root = repo_dir.resolve()
    problems = []
    for loc, base, value in _paths(data, root):
        folder = root / base if base else root
        try:
            target = (folder / value).resolve()
        except (OSError, RuntimeError) as exc:  # a symlink loop
            problems.append((loc, f"`{value}` cannot be resolved ({exc}); {_HINT}"))
            continue
        if target != root and root not in target.parents:
            problems.append((loc, f"`{value}` leads outside the repository through a symlink; "
                                  f"{_HINT} that is not a link out of it"))
    return list(dict.fromkeys(problems))  # build.dockerfile, checked once per service, is reported once


def _paths(data: dict[str, Any], root: Path) -> list[tuple[Loc, str | None, str]]:
    """(location, folder it is relative to, path) for each path the file gives; malformed values are skipped
    (the model reports them). ``build.dockerfile`` is checked in the folder of every service that names no
    Dockerfile of its own, as that is where the build reads it."""
    found: list[tuple[Loc, str | None, str]] = []
    build = _mapping(data.get("build"))
    _add(found, ("build", "context"), None, _text(build.get("context")))
    _add(found, ("infrastructure", "path"), None, _text(_mapping(data.get("infrastructure")).get("path")))
    services = _mapping(data.get("deployment")).get("services")
    for i, service in enumerate(services if isinstance(services, list) else []):
        service = _mapping(service)
        path = _text(service.get("path"))
        _add(found, ("deployment", "services", i, "path"), None, path)
        _add(found, ("deployment", "services", i, "dockerfile"), path, _text(service.get("dockerfile")))
        if service.get("dockerfile") is None:
            folder = path if path is not None else _default_folder(service.get("name"), root)
            _add(found, ("build", "dockerfile"), folder, _text(build.get("dockerfile")))
    return found


def _default_folder(name: Any, root: Path) -> str | None:
    """A service's folder when the file gives none: its name when the repository has that folder."""
    return name if isinstance(name, str) and name and (root / name).is_dir() else None


def _add(found: list[tuple[Loc, str | None, str]], loc: Loc, base: str | None, value: str | None) -> None:
    if value is None:
        return
    try:
        check_repo_path(value)
        if base is not None:
            check_repo_path(base)
    except ValueError:
        return  # the model says what is wrong with it
    found.append((loc, base, value))


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


RepoPath = Annotated[str, AfterValidator(check_repo_path)]
