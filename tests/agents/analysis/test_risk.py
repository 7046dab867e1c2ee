"""Risk classification: a table of changes and the level and reasons they get."""
from __future__ import annotations

import pytest

from agents.analysis.risk import RiskLevel, classify_risk, files_in_diff

LOW, MEDIUM, HIGH = RiskLevel.LOW, RiskLevel.MEDIUM, RiskLevel.HIGH


@pytest.mark.parametrize("files, level, reason", [
    (["README.md", "docs/setup.rst"], LOW, "documentation only"),
    (["tests/test_app.py"], LOW, "tests only"),
    (["README.md", "tests/test_app.py"], LOW, "documentation only"),
    ([], LOW, "no files changed"),
    (["backend/app.py"], MEDIUM, "application code changed (backend/app.py)"),
    (["frontend/src/App.tsx", "README.md"], MEDIUM, "application code changed"),
    (["backend/requirements.txt"], MEDIUM, "dependencies changed (backend/requirements.txt)"),
    ([".github/workflows/ci.yml"], MEDIUM, "CI configuration changed"),
    (["backend/migrations/0003_add_price.py"], HIGH, "database migration"),
    (["schema/002.sql"], HIGH, "database migration"),
    (["backend/auth/login.py"], HIGH, "authentication/authorization code"),
    (["backend/Dockerfile"], HIGH, "infrastructure (backend/Dockerfile)"),
    (["terraform/main.tf"], HIGH, "infrastructure"),
    (["k8s/deployment.yaml"], HIGH, "infrastructure"),
    (["devops_orchestra.yaml"], HIGH, "infrastructure (devops_orchestra.yaml)"),
    (["docker-compose.yml", "app.py"], HIGH, "infrastructure"),
    # JavaScript / TypeScript services
    (["web/README.md", "web/docs/usage.md", "web/CHANGELOG.md"], LOW, "documentation only (web/README.md"),
    (["web/tests/Books.test.jsx", "web/src/api.spec.ts", "web/src/__tests__/x.js"], LOW, "tests only"),
    (["web/README.md", "web/src/Books.test.tsx"], LOW, "documentation only"),
    (["web/package.json"], MEDIUM, "dependencies changed (web/package.json)"),
    (["web/package-lock.json"], MEDIUM, "dependencies changed (web/package-lock.json)"),
    (["web/yarn.lock", "web/pnpm-lock.yaml", "web/npm-shrinkwrap.json"], MEDIUM, "dependencies changed"),
    (["web/.npmrc"], MEDIUM, "dependencies changed (web/.npmrc)"),
    (["web/src/Books.jsx"], MEDIUM, "application code changed (web/src/Books.jsx)"),
    (["web/README.md", "web/package.json"], MEDIUM, "dependencies changed"),
    (["web/src/session.ts"], HIGH, "authentication/authorization code"),
])
def test_levels_and_reasons(files: list[str], level: RiskLevel, reason: str) -> None:
    risk = classify_risk(files, "")
    assert risk.level is level
    assert any(reason in r for r in risk.reasons), risk.reasons


def test_the_highest_category_decides_and_every_reason_is_listed() -> None:
    risk = classify_risk(["README.md", "app.py", "requirements.txt", "Dockerfile"], "")
    assert risk.level is HIGH
    assert risk.reasons[0].startswith("infrastructure")
    assert set(risk.categories) == {"docs", "app_code", "dependencies", "infrastructure"}
    assert "documentation (README.md)" in risk.reasons  # not "only" when code changed too
    assert risk.summary().startswith("high risk: infrastructure")
    data = risk.event_data()
    assert data["risk"] == "high" and data["reasons"] == risk.reasons


def test_schema_change_in_the_diff_is_a_migration() -> None:
    diff = "diff --git a/app/db.py b/app/db.py\n+++ b/app/db.py\n+cur.execute('ALTER TABLE items ADD price INT')\n"
    risk = classify_risk([], diff)
    assert risk.level is HIGH and risk.categories["app_code"] == ["app/db.py"]
    assert any("migration" in r for r in risk.reasons)


def test_large_app_change_is_high() -> None:
    diff = "diff --git a/app.py b/app.py\n" + "".join(f"+line {i}\n" for i in range(600))
    risk = classify_risk(["app.py"], diff)
    assert risk.level is HIGH and "large change: 600 lines" in risk.reasons[-1]


def test_files_in_diff() -> None:
    diff = ("diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -1 +1 @@\n-x\n+y\n"
            "diff --git a/docs/x.md b/docs/x.md\n")
    assert files_in_diff(diff) == ["a.py", "docs/x.md"]


def test_a_regenerated_lock_file_is_not_a_large_code_change() -> None:
    """npm install rewrites thousands of lock file lines: only application code lines count as its size."""
    diff = ("diff --git a/web/src/Books.jsx b/web/src/Books.jsx\n+++ b/web/src/Books.jsx\n+const x = 1;\n"
            "diff --git a/web/package-lock.json b/web/package-lock.json\n+++ b/web/package-lock.json\n"
            + "".join(f'+    "node_modules/p{i}": {{}},\n' for i in range(3000)))
    risk = classify_risk(["web/src/Books.jsx", "web/package-lock.json"], diff)
    assert risk.level is MEDIUM, risk.reasons
    assert set(risk.categories) == {"app_code", "dependencies"}
    big = diff.replace("+const x = 1;\n", "".join(f"+const x{i} = {i};\n" for i in range(600)))
    assert classify_risk(["web/src/Books.jsx", "web/package-lock.json"], big).reasons[-1] == \
        "large change: 600 lines changed (over 500)"
