"""JavaScript analysis with the real, pinned ESLint (installed once into the session's cache by npm)."""
from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from redis import Redis

from agents.analysis import stage as analyze_agent
from agents.analysis.javascript import eslint_home, javascript_findings
from agents.analysis.stage import verdict
from agents.findings import Severity
from jobs.graph import ANALYZE
from jobs.runner import execute_stage
from orchestra.events import EventBus, EventType
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Run, RunStore

FULLSTACK = PROJECT_ROOT / "examples" / "fullstack"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@pytest.fixture
def js_settings(settings: Settings) -> Settings:
    return settings.with_(build_ca_bundle=CA_BUNDLE)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FULLSTACK, tmp_path / "fullstack",
                                ignore=shutil.ignore_patterns("node_modules", "dist", "coverage", "__pycache__")))


def errors(root: Path, settings: Settings) -> list[str]:
    return [f.one_line() for f in javascript_findings(root, settings) if f.severity is Severity.ERROR]


def test_the_fullstack_example_is_clean(repo: Path, js_settings: Settings) -> None:
    assert errors(repo, js_settings) == []


def test_an_undefined_name_fails_the_gate_with_file_line_and_rule(repo: Path, js_settings: Settings) -> None:
    books = repo / "web" / "src" / "Books.jsx"
    lines = books.read_text().splitlines()
    books.write_text("\n".join([*lines, "export const total = () => boooks.length;"]) + "\n")
    result = verdict(javascript_findings(repo, js_settings), language="python")
    assert not result.passed
    assert f"web/src/Books.jsx:{len(lines) + 1}: no-undef 'boooks' is not defined." in result.summary


def test_a_syntax_error_is_an_error_at_its_line(repo: Path, js_settings: Settings) -> None:
    (repo / "web" / "server.js").write_text("import http from 'node:http';\nconst = 1;\n")
    [error] = errors(repo, js_settings)
    assert error.startswith("web/server.js:2: parse-error Parsing error")


def test_an_import_missing_from_package_json_is_named_with_the_fix(repo: Path, js_settings: Settings) -> None:
    server = repo / "web" / "server.js"
    server.write_text("import axios from 'axios';\nimport { join } from 'path';\nimport fs from 'node:fs';\n"
                      "import { x } from './src/Books.jsx';\nconst y = require('@scope/pkg/sub');\n"
                      "export default [axios, join, fs, x, y];\n")
    findings = [f for f in javascript_findings(repo, js_settings) if f.rule == "missing-dependency"]
    assert [(f.file, f.line) for f in findings] == [("web/server.js", 1), ("web/server.js", 5)]
    assert findings[0].suggestion == "npm install axios (in web) and commit the lock file"
    assert "`@scope/pkg`" in findings[1].message


def test_an_invalid_package_json_is_an_error(repo: Path, js_settings: Settings) -> None:
    (repo / "web" / "package.json").write_text("{not json")
    assert any("web/package.json: bad-package-json" in e for e in errors(repo, js_settings))


def test_the_repositorys_own_eslint_config_is_never_executed(repo: Path, js_settings: Settings,
                                                             tmp_path: Path) -> None:
    """A flat config is code: a hostile one would run on the worker if it were loaded."""
    marker = tmp_path / f"pwned-{uuid.uuid4().hex}"
    hostile = f"import fs from 'node:fs';\nfs.writeFileSync({str(marker)!r}, 'x');\nexport default [];\n"
    for name in ("eslint.config.js", "eslint.config.mjs"):
        (repo / name).write_text(hostile)
        (repo / "web" / name).write_text(hostile)
    javascript_findings(repo, js_settings)
    assert not marker.exists()


def test_without_npm_eslint_cannot_be_installed_and_the_gate_says_so(repo: Path, js_settings: Settings,
                                                                      tmp_path: Path) -> None:
    offline = js_settings.with_(cache_dir=tmp_path / "fresh-cache", tool_env={"PATH": str(tmp_path)})
    [finding] = [f for f in javascript_findings(repo, offline) if f.rule == "eslint-unavailable"]
    assert finding.severity is Severity.ERROR and "npm is not installed" in finding.message
    assert not (tmp_path / "fresh-cache" / "node-tools").exists() or not any(
        (tmp_path / "fresh-cache" / "node-tools").iterdir())


def test_eslint_is_installed_once_per_set_of_versions(js_settings: Settings) -> None:
    first = eslint_home(js_settings)
    stamp = (first / "node_modules" / ".bin" / "eslint").lstat().st_mtime_ns
    assert eslint_home(js_settings) == first
    assert (first / "node_modules" / ".bin" / "eslint").lstat().st_mtime_ns == stamp
    assert [p.name for p in first.parent.iterdir() if p.name.startswith("eslint-") and p != first] == []


def test_the_analysis_stage_fails_a_python_project_whose_node_service_is_broken(
        repo: Path, js_settings: Settings, redis: Redis) -> None:
    """project.language is python (the API), yet the web package is linted and its error blocks the run."""
    server = repo / "web" / "server.js"
    server.write_text(server.read_text() + "\nexport const ready = () => servr.listening;\n")
    line = len(server.read_text().splitlines())
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@x",
                                                             "commit", "-qm", "fullstack"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    run = RunStore(redis).create(Run(kind="validate", source="cli", requested_by="cli:test", repo=str(repo),
                                     ref=sha, commit=sha))
    execute_stage(run.id, ANALYZE, analyze_agent.run, redis=redis, settings=js_settings)
    result = next(e.data for e in EventBus(redis).replay(run.id) if e.type == EventType.CODE_ANALYSIS_RESULT)
    assert result["passed"] is False, result
    assert any(f["file"] == "web/server.js" and f["line"] == line and f["rule"] == "no-undef"
               for f in result["findings"]), result["findings"]
