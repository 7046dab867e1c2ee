"""Stack detection and the Dockerfile template library (no Docker engine needed)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.build.detect import Stack, UnknownStack, detect_stack
from agents.build.dockerfile import Images, generate, lint, python_command, render, template_names
from agents.findings import Severity
from tests.support.files import write_files as _files

ALL_STACKS = [
    Stack("python", "flask", "requirements.txt", "app:app"),
    Stack("python", "django", "requirements.txt", "shop"),
    Stack("python", "fastapi", "requirements.txt", "main:app"),
    Stack("python", "plain", None, "app.py"),
    Stack("node", "express", "package.json", "server.js"),
    Stack("node", "nextjs", "package.json", "next"),
    Stack("node", "static", "package.json", "dist"),
    Stack("go", "go", "go.mod", "."),
    Stack("java", "maven", "pom.xml"),
    Stack("java", "gradle", "build.gradle"),
]


DETECT_CASES = [
    ({"requirements.txt": "Flask==3.1\n", "app.py": "from flask import Flask\napp = Flask(__name__)\n"},
     Stack("python", "flask", "requirements.txt", "app:app")),
    ({"requirements.txt": "fastapi\nuvicorn\n", "api/main.py": "api = FastAPI()\n"},
     Stack("python", "fastapi", "requirements.txt", "api.main:api")),
    ({"requirements.txt": "Django>=5\n", "manage.py": "", "shop/wsgi.py": ""},
     Stack("python", "django", "requirements.txt", "shop")),
    ({"server.py": "if __name__ == '__main__':\n    pass\n"}, Stack("python", "plain", None, "server.py")),
    ({"package.json": json.dumps({"main": "srv.js", "dependencies": {"express": "^4"}})},
     Stack("node", "express", "package.json", "srv.js")),
    ({"package.json": json.dumps({"dependencies": {"next": "14", "react": "18"}})},
     Stack("node", "nextjs", "package.json", "next")),
    ({"package.json": json.dumps({"scripts": {"build": "vite build"}, "devDependencies": {"vite": "5"}})},
     Stack("node", "static", "package.json", "dist")),
    ({"go.mod": "module example.com/x\n", "main.go": "package main\n"}, Stack("go", "go", "go.mod", ".")),
    ({"pom.xml": "<project/>"}, Stack("java", "maven", "pom.xml")),
    ({"build.gradle.kts": ""}, Stack("java", "gradle", "build.gradle.kts")),
]


@pytest.mark.parametrize(("files", "expected"), DETECT_CASES, ids=[c[1].name for c in DETECT_CASES])
def test_detects_the_stack_from_the_files(tmp_path: Path, files: dict[str, str], expected: Stack) -> None:
    assert detect_stack(_files(tmp_path, files)) == expected


def test_unknown_stack_says_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("nothing to build")
    with pytest.raises(UnknownStack) as err:
        detect_stack(tmp_path)
    assert "package.json" in str(err.value) and "requirements.txt" in str(err.value)


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UnknownStack, match="does not exist"):
        detect_stack(tmp_path / "nope")


@pytest.mark.parametrize("ca_bundle", [False, True], ids=["plain", "ca-bundle"])
@pytest.mark.parametrize("stack", ALL_STACKS, ids=[s.name for s in ALL_STACKS])
def test_every_template_passes_hadolint(tmp_path: Path, stack: Stack, ca_bundle: bool) -> None:
    text = generate(stack, tmp_path, service="web", port=8080, health="/healthz", images=Images(),
                    ca_bundle=ca_bundle)
    assert "{{" not in text
    assert [f.one_line() for f in lint(text) if f.severity is not Severity.INFO] == []


def test_every_template_file_is_covered() -> None:
    from agents.build.dockerfile import template_for

    assert {template_for(s) for s in ALL_STACKS} == set(template_names())


def test_python_template_layers_dependencies_before_code_and_runs_unprivileged(tmp_path: Path) -> None:
    text = generate(ALL_STACKS[0], tmp_path, service="api", port=5000, health="/health",
                    images=Images(python="registry.local/base:1"), ca_bundle=True)
    lines = text.splitlines()
    deps = next(i for i, line in enumerate(lines) if "pip install" in line)
    code = next(i for i, line in enumerate(lines) if line.startswith("COPY . /src"))
    assert deps < code
    assert "FROM registry.local/base:1 AS deps" in text
    assert "PIP_CERT=/tmp/ca.pem" in lines[deps]  # CA bundle only in the dependency stage
    final = text[text.rindex("FROM "):]
    assert "ca.pem" not in final and "USER 10001:10001" in final and "HEALTHCHECK" in final


def test_lint_reports_findings_with_rule_and_line() -> None:
    findings = lint("FROM debian\nRUN apt-get install curl\n")
    rules = {f.rule for f in findings}
    assert "DL3006" in rules  # untagged image
    assert all(f.tool == "hadolint" and f.line for f in findings)


def test_render_refuses_a_missing_placeholder() -> None:
    with pytest.raises(KeyError, match="base_image"):
        render("python", service="x")


def test_flask_without_main_block_runs_through_flask_cli(tmp_path: Path) -> None:
    _files(tmp_path, {"requirements.txt": "flask\n", "app.py": "app = Flask(__name__)\n"})
    command = python_command(detect_stack(tmp_path), tmp_path)
    assert command[:2] == ["sh", "-c"] and "flask --app app:app run" in command[2]


def test_a_missing_ca_bundle_is_a_clear_error_before_any_build(tmp_path: Path) -> None:
    from agents.build.service import BuildRequest, ServiceSpec, build_service
    from orchestra.errors import StageFailed
    from orchestra.settings import Settings

    settings = Settings(build_ca_bundle=tmp_path / "missing.pem")
    request = BuildRequest("shop", "v1", tmp_path / "out")
    with pytest.raises(StageFailed, match="ORCHESTRA_BUILD_CA_BUNDLE"):
        build_service(None, ServiceSpec("api", tmp_path), request, settings=settings)  # type: ignore[arg-type]
