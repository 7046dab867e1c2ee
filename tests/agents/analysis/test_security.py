"""bandit findings on a small repository (bandit really runs)."""
from __future__ import annotations

from pathlib import Path

from agents.analysis.security import security_findings
from agents.findings import Severity
from tests.support.files import write_files

APP = '''import pickle
import subprocess

import yaml

DB_PASSWORD = "hunter2"


def run(cmd):
    subprocess.call(cmd, shell=True)


def load(blob, text):
    return pickle.loads(blob), yaml.load(text)
'''


def test_bandit_findings_carry_file_line_rule_severity_and_suggestion(tmp_path: Path) -> None:
    write_files(tmp_path, {"svc/app.py": APP, "tests/test_app.py": "def test_x():\n    assert True\n",
                           ".venv/lib/bad.py": "import os\nos.system('rm -rf ' + x)\n"})
    findings = {f.rule: f for f in security_findings(tmp_path)}
    shell = findings["B602"]
    assert (shell.file, shell.line, shell.severity) == ("svc/app.py", 10, Severity.ERROR)
    assert "shell=False" in (shell.suggestion or "")
    assert findings["B506"].line == 14 and "safe_load" in (findings["B506"].suggestion or "")
    assert findings["B105"].severity is Severity.INFO
    assert "B101" not in findings  # asserts in tests are how tests work
    assert all(f.file == "svc/app.py" for f in findings.values())  # .venv is not scanned


def test_clean_code_has_no_findings(tmp_path: Path) -> None:
    (tmp_path / "ok.py").write_text("def add(a: int, b: int) -> int:\n    return a + b\n")
    assert security_findings(tmp_path) == []


def test_a_scan_that_cannot_finish_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "ok.py").write_text("x = 1\n")
    [finding] = security_findings(tmp_path, timeout_s=0.001)
    assert finding.rule == "scan-failed" and finding.severity is Severity.WARNING
    assert "did not finish" in finding.message
