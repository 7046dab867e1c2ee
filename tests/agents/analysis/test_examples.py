"""The deeper analysis checks against the example shop repository (frontend + backend)."""
from __future__ import annotations

import shutil
from pathlib import Path

from agents.analysis.deps import dependency_findings
from agents.analysis.risk import RiskLevel, classify_risk
from agents.analysis.security import security_findings
from agents.analysis.structure import structure_findings
from agents.findings import Severity
from orchestra.settings import PROJECT_ROOT

SHOP = PROJECT_ROOT / "examples" / "shop"


def test_the_example_shop_has_no_blocking_findings() -> None:
    findings = dependency_findings(SHOP) + structure_findings(SHOP) + security_findings(SHOP)
    assert [f.one_line() for f in findings if f.severity is Severity.ERROR] == []


def test_an_undeclared_import_in_one_service_is_found_with_its_requirements_file(tmp_path: Path) -> None:
    shop = Path(shutil.copytree(SHOP, tmp_path / "shop"))
    app = shop / "backend" / "app.py"
    lines = app.read_text().splitlines()
    app.write_text("\n".join([*lines, "import requests"]) + "\n")
    [finding] = [f for f in dependency_findings(shop) if f.severity is Severity.ERROR]
    assert (finding.file, finding.line) == ("backend/app.py", len(lines) + 1)
    assert finding.suggestion == "add `requests` (pinned) to backend/requirements.txt"


def test_risk_of_typical_shop_changes() -> None:
    assert classify_risk(["README.md"]).level is RiskLevel.LOW
    assert classify_risk(["backend/app.py"]).level is RiskLevel.MEDIUM
    assert classify_risk(["devops_orchestra.yaml"]).level is RiskLevel.HIGH
