"""Guess a configuration from what a repository looks like: language, framework, services, ports, tests."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from orchestra.config.model import ProjectConfig

SERVICE_DIRS = ("frontend", "backend")
DEFAULT_PORTS = {"frontend": 5000, "backend": 5001}
_PORT_PATTERNS = (
    re.compile(r"""PORT["']?\s*(?:,|\|\||\?\?|:-|or)\s*["']?(\d{2,5})"""),  # env.get("PORT", 5001), PORT || 3000
    re.compile(r"""(?i)\bport\s*=\s*["']?(\d{2,5})"""),                      # app.run(port=5000), PORT = 80
    re.compile(r"""\.listen\(\s*(\d{2,5})"""),                                # app.listen(3000)
    re.compile(r"""["']:(\d{2,5})["']"""),                                    # http.ListenAndServe(":8080")
    re.compile(r"""server\.port\s*=\s*(\d{2,5})"""),                          # application.properties
)
_PY_FRAMEWORKS = ("django", "fastapi", "flask")
_NODE_FRAMEWORKS = ("next", "express", "react", "vue")


def infer_config(repo_dir: Path) -> ProjectConfig:
    """A complete, validated configuration guessed from the repository alone."""
    return ProjectConfig.model_validate(infer_defaults(repo_dir), context={"repo_dir": Path(repo_dir)})


def infer_defaults(repo_dir: Path) -> dict[str, Any]:
    """The guessed configuration as plain data (the loader fills gaps of a file with it)."""
    repo_dir = Path(repo_dir).resolve()
    dirs = [repo_dir / name for name in SERVICE_DIRS if _has_code(repo_dir / name)]
    services = [_service(d, d.name, d.name, i) for i, d in enumerate(dirs)] or [
        _service(repo_dir, project_name(repo_dir), ".", 0)]
    if len(dirs) == 2:
        services[0]["depends_on"] = ["backend"]  # the frontend calls the backend
    main = dirs[-1] if dirs else repo_dir
    language = detect_language(main)
    return {
        "project": {"name": project_name(repo_dir), "language": language,
                    "framework": detect_framework(main, language)},
        "testing": _testing([*dirs] or [repo_dir], language),
        "deployment": {"services": services},
    }


def project_name(repo_dir: Path) -> str:
    """The folder's name, made into a valid service name."""
    name = re.sub(r"[^a-z0-9-]+", "-", Path(repo_dir).resolve().name.lower()).strip("-")[:63].strip("-")
    return name or "app"


def detect_language(path: Path) -> str:
    if (path / "go.mod").is_file():
        return "go"
    if any((path / f).is_file() for f in ("pom.xml", "build.gradle", "build.gradle.kts")):
        return "java"
    if (path / "package.json").is_file():
        return "node"
    if any((path / f).is_file() for f in ("requirements.txt", "pyproject.toml", "setup.py")) or \
            any(path.glob("*.py")):
        return "python"
    return "other"


def detect_framework(path: Path, language: str) -> str | None:
    if language == "python":
        text = _read(path / "requirements.txt") + _read(path / "pyproject.toml")
        text += "".join(_read(p) for p in sorted(path.glob("*.py"))[:20])
        return next((f for f in _PY_FRAMEWORKS if re.search(rf"(?im)^\s*(?:from|import)\s+{f}\b|^\s*{f}\b|"
                                                             rf"[\"']{f}[\"'<>=~ ]", text)), None)
    if language == "node":
        deps = _package_deps(path)
        return next((f for f in _NODE_FRAMEWORKS if f in deps), None)
    return None


def _service(path: Path, name: str, relative: str, index: int) -> dict[str, Any]:
    port = guess_port(path) or DEFAULT_PORTS.get(name, 5000 + index)
    service: dict[str, Any] = {"name": name, "path": relative, "port": port, "health": "/health"}
    if (path / "Dockerfile").is_file():
        service["dockerfile"] = "Dockerfile"
    return service


def guess_port(path: Path) -> int | None:
    """The first port number the service's own code or settings mention."""
    for source in _code_files(path):
        text = _read(source)
        for pattern in _PORT_PATTERNS:
            match = pattern.search(text)
            if match and 1 <= int(match.group(1)) <= 65535:
                return int(match.group(1))
    return None


def _code_files(path: Path) -> list[Path]:
    names = ("app.py", "main.py", "server.py", "wsgi.py", "manage.py", "server.js", "index.js", "app.js",
             "main.go", "src/main/resources/application.properties")
    first = [path / n for n in names if (path / n).is_file()]
    rest = [p for ext in ("*.py", "*.js", "*.ts", "*.go") for p in sorted(path.glob(ext)) if p not in first]
    return first + rest[:30]


def _testing(dirs: list[Path], language: str) -> dict[str, Any]:
    if language == "node":
        has_tests = any("test" in _package_scripts(d) for d in dirs)
        dev = set().union(*(_package_deps(d) for d in dirs))
        framework = "jest" if "jest" in dev else "mocha" if "mocha" in dev else "npm"
        return {"enabled": has_tests, "framework": framework, "command": "npm test" if has_tests else None}
    if language == "go":
        has_tests = any(any(d.rglob("*_test.go")) for d in dirs)
        return {"enabled": has_tests, "framework": "go", "command": "go test ./..." if has_tests else None}
    if language == "java":
        gradle = any((d / "build.gradle").is_file() or (d / "build.gradle.kts").is_file() for d in dirs)
        return {"enabled": True, "framework": "junit", "command": "gradle test" if gradle else "mvn -q test"}
    has_tests = any(_has_python_tests(d) for d in dirs)
    return {"enabled": has_tests, "framework": "pytest", "command": "python -m pytest -q" if has_tests else None}


def _has_python_tests(path: Path) -> bool:
    if (path / "tests").is_dir() or (path / "test").is_dir():
        return True
    return any(path.glob("test_*.py")) or any(path.glob("*_test.py"))


def _has_code(path: Path) -> bool:
    return path.is_dir() and any(p.is_file() and p.name != ".gitkeep" for p in path.iterdir())


def _package_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(_read(path / "package.json") or "{}")
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _package_deps(path: Path) -> set[str]:
    data = _package_json(path)
    return {str(k) for section in ("dependencies", "devDependencies") for k in (data.get(section) or {})}


def _package_scripts(path: Path) -> dict[str, Any]:
    scripts = _package_json(path).get("scripts")
    return scripts if isinstance(scripts, dict) else {}


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[:200_000] if path.is_file() else ""
    except OSError:
        return ""
