"""JavaScript analysis with the real, pinned ESLint (installed once into the session's cache by npm)."""
from __future__ import annotations

import json
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
from agents.tools import run_tool
from jobs.graph import ANALYZE
from jobs.runner import execute_stage
from orchestra.events import EventBus, EventType
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Run, RunStore
from tests.support.npm_registry import NPM_LOCK_ONLY

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


# TypeScript ---------------------------------------------------------------------------------------------------

TS_OK = 'import { readFileSync } from "node:fs";\n\nexport const size = (p: string): number =>\n' \
        '  readFileSync(p, "utf8").length;\n'


@pytest.fixture
def ts_repo(tmp_path: Path, js_settings: Settings) -> Path:
    """A TypeScript package whose types come from a dependency (@types/node), with its lock file."""
    home = tmp_path / "tsrepo" / "svc"
    (home / "src").mkdir(parents=True)
    (home / "package.json").write_text(json.dumps({"name": "svc", "version": "1.0.0", "private": True,
                                                   "devDependencies": {"@types/node": "20.19.9"}}))
    (home / "tsconfig.json").write_text(json.dumps({
        "compilerOptions": {"strict": True, "module": "nodenext", "target": "es2022", "types": ["node"]},
        "include": ["src"]}))
    (home / "src" / "size.ts").write_text(TS_OK)
    lock = run_tool(NPM_LOCK_ONLY, cwd=home,
                    settings=js_settings, timeout=300,
                    extra_env={"npm_config_cache": str(js_settings.cache / "npm"), "NPM_CONFIG_CAFILE": str(CA_BUNDLE)})
    assert lock.returncode == 0, lock.stderr
    return home.parent


def test_typescript_that_type_checks_has_no_findings(ts_repo: Path, js_settings: Settings) -> None:
    """No TS2307 for node:fs: the dependency's types were installed and found (and ESLint skips .ts files)."""
    # (npm audit's findings depend on the registry's advisories: tests/agents/analysis/test_npm_audit.py)
    assert [f.one_line() for f in javascript_findings(ts_repo, js_settings) if f.tool != "npm-audit"] == []
    assert sorted(p.name for p in (ts_repo / "svc").iterdir()) == ["package-lock.json", "package.json", "src",
                                                                    "tsconfig.json"]  # the checkout is untouched


def test_a_type_error_fails_the_gate_with_file_line_and_code(ts_repo: Path, js_settings: Settings) -> None:
    wrong = '\nexport const wrong: number = readFileSync("x", "utf8");\n'
    (ts_repo / "svc" / "src" / "size.ts").write_text(TS_OK + wrong)
    result = verdict(javascript_findings(ts_repo, js_settings), language="node")
    assert not result.passed
    assert "svc/src/size.ts:6: TS2322 Type 'string' is not assignable to type 'number'." in result.summary


def test_a_broken_tsconfig_is_reported_at_the_tsconfig(ts_repo: Path, js_settings: Settings) -> None:
    (ts_repo / "svc" / "tsconfig.json").write_text('{"compilerOptions": {"target": "es1999"}}')
    [finding] = [f for f in javascript_findings(ts_repo, js_settings) if f.tool == "tsc"]
    assert finding.file == "svc/tsconfig.json" and finding.rule.startswith("TS")
    assert finding.severity is Severity.ERROR


def test_typescript_imports_missing_from_package_json_are_named_but_path_aliases_are_not(
        ts_repo: Path, js_settings: Settings) -> None:
    (ts_repo / "svc" / "src" / "app.tsx").write_text(
        'import { z } from "zod";\nimport type { Config } from "@acme/config";\n'
        'import Button from "@/components/Button";\n'
        'import util from "~/util";\nexport default [z, Button, util] as unknown as Config;\n')
    missing = [f for f in javascript_findings(ts_repo, js_settings) if f.rule == "missing-dependency"]
    assert [(f.file, f.line) for f in missing] == [("svc/src/app.tsx", 1), ("svc/src/app.tsx", 2)]


def test_without_a_lock_file_typescript_cannot_be_checked_and_the_gate_says_why(
        ts_repo: Path, js_settings: Settings) -> None:
    (ts_repo / "svc" / "package-lock.json").unlink()
    [finding] = [f for f in javascript_findings(ts_repo, js_settings) if f.tool == "tsc"]
    assert (finding.rule, finding.file, finding.severity) == ("tsc-unavailable", "svc/tsconfig.json", Severity.ERROR)
    assert "commit package-lock.json" in str(finding.suggestion)
