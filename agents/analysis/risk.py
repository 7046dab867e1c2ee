"""Change risk: low / medium / high, with the reasons, from the changed files and the diff.

- low: documentation or tests only (or nothing changed);
- medium: application code, dependency changes (manifests, lock files, npm/yarn settings), CI configuration;
- high: migrations, authentication / authorization code, infrastructure (Dockerfile, compose,
  terraform, kubernetes, helm, devops_orchestra.yaml), or a large change to application code.
The router reads the level (low skips generated tests; high forces a canary and a longer watch).
"""
from __future__ import annotations

import re
from enum import StrEnum
from fnmatch import fnmatch
from pathlib import PurePosixPath

from pydantic import BaseModel, Field


class RiskLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class Category(StrEnum):
    DOCS = "docs"
    TESTS = "tests"
    APP_CODE = "app_code"
    DEPENDENCIES = "dependencies"
    CI = "ci"
    MIGRATIONS = "migrations"
    AUTH = "auth"
    INFRASTRUCTURE = "infrastructure"


LEVEL_OF = {Category.DOCS: RiskLevel.LOW, Category.TESTS: RiskLevel.LOW,
            Category.APP_CODE: RiskLevel.MEDIUM, Category.DEPENDENCIES: RiskLevel.MEDIUM,
            Category.CI: RiskLevel.MEDIUM, Category.MIGRATIONS: RiskLevel.HIGH,
            Category.AUTH: RiskLevel.HIGH, Category.INFRASTRUCTURE: RiskLevel.HIGH}
ORDER = [RiskLevel.LOW, RiskLevel.MEDIUM, RiskLevel.HIGH]
LARGE_CHANGE_LINES = 500

INFRA = ("Dockerfile", "Dockerfile.*", "*.dockerfile", "docker-compose*.y*ml", "compose*.y*ml", "*.tf",
         "*.tfvars", "*.hcl", "devops_orchestra.yaml", "devops_orchestra.yml", "nginx*.conf",
         "Procfile", "Makefile", "*.service")
INFRA_DIRS = {"terraform", "k8s", "kubernetes", "helm", "charts", "deploy", "infra", "infrastructure",
              "ansible", "manifests", "kustomize", "cloudformation"}
DEPS = ("requirements*.txt", "pyproject.toml", "setup.py", "setup.cfg", "Pipfile", "Pipfile.lock",
        "poetry.lock", "uv.lock", "package.json", "package-lock.json", "npm-shrinkwrap.json", "yarn.lock",
        "pnpm-lock.yaml", "pnpm-workspace.yaml", "bun.lock", "bun.lockb", ".npmrc", ".yarnrc", ".yarnrc.yml",
        "go.mod", "go.sum", "Gemfile", "Gemfile.lock", "Cargo.toml", "Cargo.lock")
# JavaScript/TypeScript test files (Vitest, Jest, Mocha): Books.test.jsx, api.spec.ts, __tests__/x.js.
JS_TESTS = ("*.test.js", "*.test.jsx", "*.test.ts", "*.test.tsx", "*.test.mjs", "*.test.cjs", "*.spec.js",
            "*.spec.jsx", "*.spec.ts", "*.spec.tsx", "*.spec.mjs", "*.spec.cjs")
TEST_DIRS = {"tests", "test", "spec", "__tests__", "__mocks__"}
DOCS = ("*.md", "*.rst", "*.adoc", "*.txt", "LICENSE*", "CHANGELOG*", "AUTHORS*", "*.png", "*.jpg",
        "*.svg", "*.gif")
MIGRATION_DIRS = {"migrations", "alembic", "migrate", "db_migrations"}
AUTH_WORDS = re.compile(r"auth|login|logout|passw|permission|rbac|acl|oauth|jwt|session|token|"
                        r"credential|crypto|security|sso|saml|csrf", re.I)
MIGRATION_SQL = re.compile(r"^[+-].*\b(ALTER|DROP|CREATE)\s+(TABLE|INDEX|COLUMN)\b|^[+-].*op\.(add|drop|"
                           r"alter)_(column|table)", re.I | re.M)


class Risk(BaseModel):
    """The classification of one change, with a reason per thing that raised it."""

    level: RiskLevel
    reasons: list[str] = Field(default_factory=list)
    categories: dict[str, list[str]] = Field(default_factory=dict)  # category -> files

    def summary(self) -> str:
        return f"{self.level.value} risk: " + "; ".join(self.reasons)

    def event_data(self) -> dict[str, object]:
        """The ``risk_classified`` event's data (the relay reads ``risk`` and ``reasons``)."""
        return {"risk": self.level.value, "level": self.level.value, "reasons": self.reasons,
                "categories": self.categories, "summary": self.summary()}


def classify_risk(changed_files: list[str], diff: str = "") -> Risk:
    """Classify a change from its changed file paths (repository-relative) and its unified diff."""
    files = changed_files or files_in_diff(diff)
    if not files:
        return Risk(level=RiskLevel.LOW, reasons=["no files changed"])
    categories: dict[str, list[str]] = {}
    for path in files:
        for category in categorize(path):
            categories.setdefault(category, []).append(path)
    if MIGRATION_SQL.search(diff) and Category.MIGRATIONS not in categories:
        categories[Category.MIGRATIONS] = ["(schema change in the diff)"]
    level = max((LEVEL_OF[Category(c)] for c in categories), key=ORDER.index)
    ranked = sorted(categories.items(), key=lambda kv: -ORDER.index(LEVEL_OF[Category(kv[0])]))
    reasons = [_reason(Category(c), paths, only=level is RiskLevel.LOW) for c, paths in ranked]
    changed = _changed_lines(diff, set(categories.get(Category.APP_CODE, [])))
    if Category.APP_CODE in categories and changed > LARGE_CHANGE_LINES and level is not RiskLevel.HIGH:
        level = RiskLevel.HIGH
        reasons.append(f"large change: {changed} lines changed (over {LARGE_CHANGE_LINES})")
    return Risk(level=level, reasons=reasons, categories={str(c): p for c, p in categories.items()})


def categorize(path: str) -> set[Category]:
    """The categories one changed file falls into (a file may be app code and auth at once)."""
    p = PurePosixPath(path)
    dirs = {d.lower() for d in p.parts[:-1]}
    name = p.name
    if _match(name, INFRA) or dirs & INFRA_DIRS or p.suffix in (".tf", ".hcl"):
        return {Category.INFRASTRUCTURE}
    if ".github" in dirs and "workflows" in dirs or name in (".gitlab-ci.yml", "Jenkinsfile", ".ci"):
        return {Category.CI}
    if dirs & MIGRATION_DIRS or p.suffix == ".sql":
        return {Category.MIGRATIONS}
    if _match(name, DEPS):
        return {Category.DEPENDENCIES}
    if dirs & TEST_DIRS or name.startswith("test_") or "_test." in name or _match(name, JS_TESTS):
        return {Category.TESTS}
    if _match(name, DOCS) or dirs & {"docs", "doc"}:
        return {Category.DOCS}
    found = {Category.APP_CODE}
    if AUTH_WORDS.search(path):
        found.add(Category.AUTH)
    return found


def files_in_diff(diff: str) -> list[str]:
    """Changed paths named by a unified diff's ``diff --git`` / ``+++`` headers."""
    files: list[str] = []
    for match in re.finditer(r"^diff --git a/(\S+) b/(\S+)$", diff, re.M):
        if match.group(2) not in files:
            files.append(match.group(2))
    return files


def _reason(category: Category, paths: list[str], *, only: bool) -> str:
    shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    suffix = " only" if only else ""
    text = {Category.DOCS: "documentation" + suffix, Category.TESTS: "tests" + suffix,
            Category.APP_CODE: "application code changed", Category.DEPENDENCIES: "dependencies changed",
            Category.CI: "CI configuration changed", Category.MIGRATIONS: "database migration",
            Category.AUTH: "authentication/authorization code", Category.INFRASTRUCTURE: "infrastructure"}
    return f"{text[category]} ({shown})"


def _changed_lines(diff: str, app_files: set[str]) -> int:
    """Changed lines of application code: a regenerated lock file's thousands of lines are not a large change."""
    count, counting = 0, True
    for line in diff.splitlines():
        header = re.match(r"diff --git a/\S+ b/(\S+)$", line)
        if header:
            counting = header.group(1) in app_files
        elif counting and line[:1] in "+-" and not line.startswith(("+++", "---")):
            count += 1
    return count


def _match(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch(name, pattern) for pattern in patterns)
