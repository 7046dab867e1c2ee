"""Dependency findings on small repositories written into tmp_path."""
from __future__ import annotations

from pathlib import Path

from agents.analysis.deps import RULE_MISSING, RULE_UNUSED, candidates, dependency_findings, normalize
from agents.findings import Severity
from tests.support.files import write_files


def by_rule(findings, rule):
    return sorted((f.file, f.line, f.message) for f in findings if f.rule == rule)


def test_undeclared_import_is_an_error_with_file_line_and_distribution(tmp_path: Path) -> None:
    write_files(tmp_path, {
        "requirements.txt": "Flask==3.0.0\n",
        "app.py": "import os\nimport json\n\nimport flask\nimport yaml\nfrom requests import get\n",
    })
    missing = [f for f in dependency_findings(tmp_path) if f.rule == RULE_MISSING]
    assert [(f.file, f.line) for f in missing] == [("app.py", 5), ("app.py", 6)]
    assert all(f.severity is Severity.ERROR for f in missing)
    assert "PyYAML" in missing[0].message and "requirements.txt" in missing[0].suggestion
    assert "requests" in missing[1].suggestion


def test_stdlib_local_modules_and_relative_imports_are_not_reported(tmp_path: Path) -> None:
    write_files(tmp_path, {
        "requirements.txt": "",
        "app.py": "import sys, asyncio, tomllib\nimport helpers\nfrom shop.models import Item\n",
        "helpers.py": "from . import x\n",
        "shop/__init__.py": "",
        "shop/models.py": "from __future__ import annotations\nfrom .db import q\n",
    })
    assert dependency_findings(tmp_path) == []


def test_declared_but_unused_is_a_warning_and_tools_are_ignored(tmp_path: Path) -> None:
    write_files(tmp_path, {
        "requirements.txt": "# web\nflask>=3\nPyYAML==6.0.1  # config\nrequests\ngunicorn==22\n",
        "app.py": "import flask\nimport yaml\n",
    })
    findings = dependency_findings(tmp_path)
    assert by_rule(findings, RULE_MISSING) == []
    unused = [f for f in findings if f.rule == RULE_UNUSED]
    assert [(f.file, f.line, f.severity) for f in unused] == [("requirements.txt", 4, Severity.WARNING)]
    assert "requests" in unused[0].message


def test_each_service_is_checked_against_its_own_requirements(tmp_path: Path) -> None:
    write_files(tmp_path, {
        "backend/requirements.txt": "flask\n",
        "backend/app.py": "import flask\n",
        "frontend/requirements.txt": "aiohttp\n",
        "frontend/server.py": "import aiohttp\nimport flask\n",
    })
    missing = by_rule(dependency_findings(tmp_path), RULE_MISSING)
    assert [(f, line) for f, line, _ in missing] == [("frontend/server.py", 2)]


def test_pyproject_includes_and_optional_imports(tmp_path: Path) -> None:
    write_files(tmp_path, {
        "pyproject.toml": '[project]\nname = "x"\ndependencies = [\n  "PyJWT>=2",\n]\n'
                          '[project.optional-dependencies]\ndev = ["pytest"]\n',
        "requirements.txt": "-r requirements-base.txt\n",
        "requirements-base.txt": "beautifulsoup4\n",
        "src/x/__init__.py": "import jwt\nimport bs4\n"
                             "try:\n    import ujson\nexcept ImportError:\n    ujson = None\n",
        "tests/test_x.py": "import pytest\nimport hypothesis\n",
    })
    missing = [f for f in dependency_findings(tmp_path) if f.rule == RULE_MISSING]
    assert [(f.file, f.line, f.severity) for f in missing] == [("tests/test_x.py", 2, Severity.WARNING)]
    assert "requirements-dev.txt" in missing[0].suggestion


def test_no_requirements_file_at_all(tmp_path: Path) -> None:
    write_files(tmp_path, {"main.py": "import numpy as np\n", ".venv/lib/site.py": "import nothing_here\n"})
    [finding] = dependency_findings(tmp_path)
    assert finding.rule == RULE_MISSING and finding.file == "main.py"
    assert "no requirements file" in finding.message


def test_name_mapping() -> None:
    assert normalize("Flask_SQLAlchemy") == "flask-sqlalchemy"
    assert {"pyyaml"} <= candidates("yaml")
    assert {"scikit-learn"} <= candidates("sklearn")
    assert {"slack-bolt"} <= candidates("slack_bolt")


def test_a_same_named_module_elsewhere_does_not_hide_a_distribution(tmp_path: Path) -> None:
    write_files(tmp_path, {
        "requirements.txt": "docker==7.0\n",
        "agents/__init__.py": "", "agents/targets/__init__.py": "",
        "agents/targets/docker.py": "import docker\nimport redis\n",  # own name: still the distribution
        "agents/build.py": "import docker\n",
        "tests/test_build.py": "import pytest\nimport build_helpers\n",
        "tests/build_helpers.py": "",
    })
    findings = dependency_findings(tmp_path)
    assert [(f.rule, f.file, f.line) for f in findings] == [(RULE_MISSING, "agents/targets/docker.py", 2)]
