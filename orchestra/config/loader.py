"""Load devops_orchestra.yaml: YAML with line numbers, inferred defaults, one line per problem."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from orchestra.config.graph import CROSS_CHECK, raw_graph_errors
from orchestra.config.infer import infer_config, infer_defaults
from orchestra.config.model import CONFIG_FILENAME, ProjectConfig
from orchestra.config.paths import escaping_paths
from orchestra.config.problems import duplicate_keys, expand, field_path, line_of
from orchestra.errors import ConfigError
from orchestra.limits import timing_problems

logger = logging.getLogger(__name__)


class _Loader(yaml.CSafeLoader):
    """YAML 1.2 scalars: ``16:00`` stays a string (not 960), only true/false are booleans.

    libyaml parses (about ten times faster than the pure-Python parser: every /deploy reads the
    config twice, the trusted policy and the ref's), the resolvers below decide the types.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (
        "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$"),
                              list("-+0123456789"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?$"),
                              list("-+0123456789"))


def config_path(repo_dir: Path) -> Path:
    """The repository's config file: devops_orchestra.yaml, or devops_orchestra.yml when only that exists."""
    path = Path(repo_dir) / CONFIG_FILENAME
    other = path.with_suffix(".yml")
    return other if not path.is_file() and other.is_file() else path


def load_config(repo_dir: Path) -> ProjectConfig:
    """The repository's configuration; inferred defaults when it has no devops_orchestra.yaml."""
    path = config_path(repo_dir)
    if not path.is_file():
        logger.info("no %s in %s: using inferred defaults", CONFIG_FILENAME, repo_dir)
        return infer_config(repo_dir)
    return load_file(path, repo_dir=repo_dir)


def load_file(path: Path, *, repo_dir: Path | None = None) -> ProjectConfig:
    """Parse and validate one file; raises ConfigError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read the file: {exc}"]) from exc
    return parse_config(text, filename=str(path), repo_dir=repo_dir or path.parent)


def validate_file(path: Path) -> list[str]:
    """Every problem of the file as ``FILE:LINE: field.path: what is wrong``; empty when valid."""
    try:
        load_file(path)
    except ConfigError as exc:
        return exc.problems
    return []


def parse_config(text: str, *, filename: str, repo_dir: Path | None = None) -> ProjectConfig:
    """Validate YAML text; missing sections come from what the repository at ``repo_dir`` looks like."""
    try:
        root, data = _parse(text)
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(filename, exc)]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{filename}:1: (top level): must be a mapping of sections such as project, "
                           "deployment, environments"])
    problems = [f"{filename}:{line}: {field_path(loc)}: {msg}" for loc, line, msg in duplicate_keys(root)]
    data = with_inferred(data, repo_dir) if repo_dir is not None else data
    if repo_dir is not None:  # a symlink that leads out of the checkout
        problems += [f"{filename}:{line_of(root, loc)}: {field_path(loc)}: {msg}"
                     for loc, msg in escaping_paths(data, repo_dir)]
    try:
        config = ProjectConfig.model_validate(data, context={"repo_dir": repo_dir})
    except ValidationError as exc:
        errors: list[Any] = list(exc.errors())
        if not any(e["type"] == CROSS_CHECK for e in errors):
            errors += raw_graph_errors(data)
        problems += [f"{filename}:{line_of(root, loc)}: {field_path(loc)}: {msg}"
                     for loc, msg in expand(errors)]
    else:
        problems += [f"{filename}:{line_of(root, loc)}: {field_path(loc)}: {msg}"
                     for loc, msg in timing_problems(config)]
    if problems:
        raise ConfigError(sorted(problems, key=_line_number))
    config._source = Path(filename)
    return config


def _parse(text: str) -> tuple[yaml.Node | None, Any]:
    """The document's node tree (for line numbers) and the data built from it, in one parse."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        return root, loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()


def with_inferred(data: dict[str, Any], repo_dir: Path) -> dict[str, Any]:
    """Fill what the file leaves out (project name and language, tests, services) from the repository."""
    inferred = infer_defaults(repo_dir)
    merged = dict(data)
    project = merged.get("project")
    if project is None:
        merged["project"] = inferred["project"]
    elif isinstance(project, dict):
        merged["project"] = {**inferred["project"], **project}
    if "testing" not in merged:
        merged["testing"] = inferred["testing"]
    deployment = merged.get("deployment")
    if deployment is None:
        merged["deployment"] = {"services": inferred["deployment"]["services"]}
    elif isinstance(deployment, dict) and "services" not in deployment:
        merged["deployment"] = {**deployment, "services": inferred["deployment"]["services"]}
    return merged


def _yaml_problem(filename: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else 1
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    return f"{filename}:{line}: yaml: {problem}" + (f" ({context})" if context else "")


def _line_number(problem: str) -> int:
    match = re.match(r"^.*?:(\d+): ", problem)
    return int(match.group(1)) if match else 0
