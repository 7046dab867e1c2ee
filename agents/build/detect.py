"""Which stack a service is written in, read from its files."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestra.errors import OrchestraError

PYTHON_DEPS = ("requirements.txt", "pyproject.toml", "setup.py", "Pipfile")
ENTRY_CANDIDATES = ("app.py", "main.py", "server.py", "wsgi.py", "application.py", "run.py")
_SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", "tests", "test"}


class UnknownStack(OrchestraError):
    """No supported stack was recognised in a service's folder."""


@dataclass(frozen=True)
class Stack:
    """A service's language and framework, and the files that matter for building it."""

    language: str  # python | node | go | java
    # flask | django | fastapi | plain | express | nextjs | static | go (standard library only) | modules
    # (Go with requirements) | maven | gradle
    framework: str
    deps_file: str | None = None  # requirements.txt, package.json, go.mod, pom.xml, build.gradle ...
    # python: "module:app" or a script; node: main script; static: the build's output folder; django: project
    entry: str | None = None

    @property
    def name(self) -> str:
        return f"{self.language}-{self.framework}"

    @property
    def not_built_here(self) -> str | None:
        """Why a generated Dockerfile for this stack is only generated and linted here, or None."""
        return NOT_BUILT_HERE.get(self.name) or NOT_BUILT_HERE.get(self.language)


# Images are made offline here, from Debian packages (scripts/build-*-base-image); these stacks need more.
NOT_BUILT_HERE = {
    "go-modules": "its go.mod requires modules, which come from the Go module proxy (proxy.golang.org) and "
                  "this build host does not reach it; only Go services that use the standard library "
                  "alone are built here, on Debian's Go (scripts/build-go-base-image)",
    "java": "Java images need a JDK build image and Maven or Gradle dependencies from Maven Central, and no "
            "offline JDK base image is made here (only Python, Node and Go ones are)",
}


def detect_stack(path: Path) -> Stack:
    """Recognise the stack of the service in ``path``; UnknownStack says what was looked for."""
    if not path.is_dir():
        raise UnknownStack(f"service folder {path} does not exist",
                           hint="check the service's `path` in devops_orchestra.yaml")
    for detector in (_python, _node, _go, _java):
        stack = detector(path)
        if stack is not None:
            return stack
    raise UnknownStack(
        f"no supported stack found in {path}",
        hint="add a Dockerfile, or one of requirements.txt/pyproject.toml (Python), package.json (Node), "
             "go.mod (Go), pom.xml/build.gradle (Java)")


def _python(path: Path) -> Stack | None:
    deps_file = next((f for f in PYTHON_DEPS if (path / f).is_file()), None)
    sources = _python_sources(path)
    if deps_file is None and not sources:
        return None
    deps = _read(path / deps_file).lower() if deps_file else ""
    if "django" in deps or (path / "manage.py").is_file():
        return Stack("python", "django", deps_file, _django_project(path))
    for framework, marker in (("fastapi", "FastAPI("), ("flask", "Flask(")):
        if framework in deps or any(marker in _read(s) for s in sources):
            return Stack("python", framework, deps_file, _app_entry(path, sources, marker))
    return Stack("python", "plain", deps_file, _script_entry(path, sources))


def _python_sources(path: Path) -> list[Path]:
    found = [p for p in sorted(path.glob("*.py"))]
    for sub in sorted(path.iterdir()):
        if sub.is_dir() and sub.name not in _SKIP_DIRS:
            found.extend(sorted(sub.glob("*.py")))
    return found


def _app_entry(path: Path, sources: list[Path], marker: str) -> str:
    """``module:variable`` of the app object, preferring the usual file names."""
    ranked = sorted(sources, key=lambda s: (s.name not in ENTRY_CANDIDATES, len(s.parts)))
    for source in ranked:
        match = re.search(rf"^(\w+)\s*=\s*{re.escape(marker)}", _read(source), re.MULTILINE)
        if match:
            module = ".".join(source.relative_to(path).with_suffix("").parts)
            return f"{module}:{match.group(1)}"
    return "app:app"


def _script_entry(path: Path, sources: list[Path]) -> str:
    for name in ENTRY_CANDIDATES:
        if (path / name).is_file():
            return name
    mains = [s for s in sources if "__main__" in _read(s)]
    if mains:
        return str(mains[0].relative_to(path))
    raise UnknownStack(f"no entry point found for the Python service in {path}",
                       hint=f"add one of {', '.join(ENTRY_CANDIDATES)} or a Dockerfile")


def _django_project(path: Path) -> str:
    for wsgi in sorted(path.glob("*/wsgi.py")):
        return wsgi.parent.name
    raise UnknownStack(f"Django service in {path} has no <project>/wsgi.py",
                       hint="run `django-admin startproject`, or add a Dockerfile")


def _node(path: Path) -> Stack | None:
    if not (path / "package.json").is_file():
        return None
    try:
        package = json.loads(_read(path / "package.json"))
    except json.JSONDecodeError as exc:
        raise UnknownStack(f"{path / 'package.json'} is not valid JSON: {exc}") from exc
    deps = {**package.get("dependencies", {}), **package.get("devDependencies", {})}
    if "next" in deps:
        return Stack("node", "nextjs", "package.json", "next")
    scripts = package.get("scripts", {})
    if _serves(package, scripts):
        return Stack("node", "express", "package.json", package.get("main", "index.js"))
    if "build" in scripts:  # a front end: its build makes files, nothing of it runs as a server
        return Stack("node", "static", "package.json", "build" if "react-scripts" in deps else "dist")
    return None


# A package that runs a server of its own; a `start` script that only starts a bundler's development
# server (Create React App, Vite, ...) or a static file server (serve, http-server) does not make a front
# end one: its files are served by nginx instead.
SERVER_PACKAGES = ("express", "koa", "fastify", "@hapi/hapi", "restify", "@nestjs/core", "polka")
DEV_SERVERS = ("react-scripts start", "vite", "parcel", "webpack serve", "webpack-dev-server", "ng serve",
               "vue-cli-service serve", "serve ", "npx serve ", "http-server")


def _serves(package: dict[str, Any], scripts: dict[str, str]) -> bool:
    if "main" in package or any(name in package.get("dependencies", {}) for name in SERVER_PACKAGES):
        return True
    start = str(scripts.get("start", "")).strip()
    return bool(start) and not start.startswith(DEV_SERVERS)


def _go(path: Path) -> Stack | None:
    if not (path / "go.mod").is_file():
        return None
    return Stack("go", "modules" if go_requirements(_read(path / "go.mod")) else "go", "go.mod", ".")


def go_requirements(go_mod: str) -> list[str]:
    """The module paths a go.mod's ``require`` directives name (single lines and blocks)."""
    text = re.sub(r"//[^\n]*", "", go_mod)
    found = re.findall(r"^\s*require\s+([^\s(]+)", text, re.MULTILINE)
    for block in re.findall(r"^\s*require\s*\(([^)]*)\)", text, re.MULTILINE):
        found += [line.split()[0] for line in block.splitlines() if line.strip()]
    return found


def _java(path: Path) -> Stack | None:
    if (path / "pom.xml").is_file():
        return Stack("java", "maven", "pom.xml")
    for name in ("build.gradle", "build.gradle.kts"):
        if (path / name).is_file():
            return Stack("java", "gradle", name)
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
