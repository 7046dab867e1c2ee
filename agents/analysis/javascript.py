"""JavaScript/TypeScript analysis: ESLint (pinned, recommended rules), ``tsc --noEmit`` for packages with a
tsconfig.json, and imports missing from package.json.

ESLint comes from an npm install of pinned versions into the worker's cache, one folder per set of
versions, built in a staging folder and renamed into place: a run never installs into another run's
tools, and a half-finished install is never used. The repository's own ESLint configuration is not
loaded (a flat config is JavaScript, and loading it would run the repository's code on the worker):
every package is linted with ESLint's recommended rules.

TypeScript is checked with the pinned ``tsc`` (it reads tsconfig.json, a JSON file, and runs none of the
repository's code). It needs the package's dependencies for their types: they come from the test stage's
cached ``npm ci --ignore-scripts`` (:func:`agents.testing.node.ensure_modules`), and ``tsc`` runs on a
copy of the package placed beside them, so the checkout is never written to.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from agents.analysis.npm_audit import audit_findings
from agents.findings import Finding, Severity
from agents.testing.node import SKIP_COPY, ensure_modules
from agents.tools import run_tool
from orchestra.errors import OrchestraError
from orchestra.settings import Settings

CONFIG_VERSION = "2"  # part of the cache key: a changed CONFIG gets a fresh folder
ESLINT_PACKAGES = ("eslint@9.39.1", "@eslint/js@9.39.1", "globals@16.3.0", "typescript@5.9.3")
JS_SOURCES = (".js", ".jsx", ".mjs", ".cjs")  # what ESLint lints here (it has no TypeScript parser)
SOURCES = (*JS_SOURCES, ".ts", ".tsx", ".mts", ".cts")
SKIP_DIRS = {"node_modules", "dist", "build", "coverage", ".git", ".next"}
# ESLint rules that mean the code cannot work: they fail the gate like ruff's F821 and E9.
GATE_RULES = {"no-undef", "no-dupe-keys", "no-unreachable", "no-const-assign", "no-import-assign", None}
INSTALL_TIMEOUT_S = 300
ESLINT_TIMEOUT_S = 120
TSC_TIMEOUT_S = 300
_TSC_LINE = re.compile(r"^(?:(?P<file>.+?)\((?P<line>\d+),\d+\): )?error (?P<code>TS\d+): (?P<message>.*)$")
_NPM_NAME = re.compile(r"^(?:@[a-z0-9][\w.-]*/)?[a-z0-9][\w.-]*$", re.I)  # npm's rule: `@/x` or `~/x` are aliases
CONFIG = """import js from "@eslint/js";
import globals from "globals";

export default [
  js.configs.recommended,
  {
    files: ["**/*.{js,jsx,mjs,cjs}"],
    languageOptions: {
      ecmaVersion: "latest", sourceType: "module",
      parserOptions: { ecmaFeatures: { jsx: true } },
      globals: { ...globals.browser, ...globals.node },
    },
  },
  // Without a React plugin, ESLint does not see a component used in JSX: capitalised names are exempt.
  { files: ["**/*.jsx"], rules: { "no-unused-vars": ["error", { varsIgnorePattern: "^[A-Z]" }] } },
  { files: ["**/*.cjs"], languageOptions: { sourceType: "commonjs" } },
  { ignores: ["**/node_modules/**", "**/dist/**", "**/build/**", "**/coverage/**", "**/.next/**"] },
];
"""
NODE_BUILTINS = frozenset((
    "assert buffer child_process cluster console constants crypto dgram diagnostics_channel dns domain events fs "
    "http http2 https inspector module net os path perf_hooks process punycode querystring readline repl stream "
    "string_decoder sys timers tls trace_events tty url util v8 vm wasi worker_threads zlib test").split())
_IMPORT = re.compile(r"""(?:^|[^\w.$])(?:import\s[^'"]*?from\s*|import\s*\(?\s*|require\s*\(\s*|export\s[^'"]*?from\s*)
                         ['"]([^'"]+)['"]""", re.VERBOSE)


def packages(root: Path) -> list[Path]:
    """Folders with a package.json, outside installed and built trees."""
    return sorted(p.parent for p in root.rglob("package.json")
                  if not set(p.relative_to(root).parts) & SKIP_DIRS)


def javascript_findings(root: Path, settings: Settings) -> list[Finding]:
    """Missing-import, tsc, npm audit and ESLint findings for every package in the repository."""
    homes = packages(root)
    findings: list[Finding] = []
    for home in homes:
        findings += missing_imports(home, root)
        if (home / "tsconfig.json").is_file():
            findings += tsc_findings(home, root, settings)
    findings += audit_findings(homes, root, settings)  # known vulnerabilities in the locked dependencies
    linted = [h for h in homes if any(p.suffix in JS_SOURCES for p in sources(h))]
    if linted:
        try:
            findings += eslint_findings(root, linted, settings)
        except OrchestraError as exc:  # e.g. offline: the code was not linted, so it does not pass
            findings.append(Finding(tool="eslint", rule="eslint-unavailable", message=exc.message,
                                    suggestion=exc.hint))
    return findings


def sources(home: Path) -> list[Path]:
    return sorted(p for p in home.rglob("*") if p.suffix in SOURCES and p.is_file()
                  and not set(p.relative_to(home).parts) & SKIP_DIRS)


def missing_imports(home: Path, root: Path) -> list[Finding]:
    """Bare imports of packages that package.json does not declare (they fail at install time)."""
    try:
        manifest = json.loads((home / "package.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return [Finding(tool="npm", rule="bad-package-json", file=str((home / "package.json").relative_to(root)),
                        message=f"package.json is not valid JSON: {exc}",
                        suggestion="fix the JSON syntax (npm refuses the package as it is)")]
    declared = {name for key in ("dependencies", "devDependencies", "peerDependencies", "optionalDependencies")
                for name in (manifest.get(key) or {})}
    found = []
    for source in sources(home):
        for number, line in enumerate(source.read_text(errors="replace").splitlines(), 1):
            for spec in _IMPORT.findall(line):
                name = _package_of(spec)
                if name and name not in declared and name != manifest.get("name"):
                    found.append(Finding(
                        tool="imports", rule="missing-dependency", file=str(source.relative_to(root)), line=number,
                        message=f"imports `{spec}` but package.json does not declare `{name}`",
                        suggestion=f"npm install {name} (in {home.relative_to(root) or '.'}) and commit the lock file"))
    return found


def _package_of(spec: str) -> str | None:
    if spec.startswith((".", "/", "node:", "#")) or "://" in spec:
        return None
    parts = spec.split("/")
    name = "/".join(parts[:2]) if spec.startswith("@") else parts[0]
    return None if name in NODE_BUILTINS or not _NPM_NAME.match(name) else name


def eslint_home(settings: Settings) -> Path:
    """The pinned ESLint, installed once per set of versions into the worker's cache."""
    key = hashlib.sha256("\n".join((CONFIG_VERSION, *ESLINT_PACKAGES, CONFIG)).encode()).hexdigest()[:16]
    home = settings.cache / "node-tools" / f"eslint-{key}"
    if (home / "node_modules" / ".bin" / "eslint").exists():
        return home
    npm = shutil.which("npm", path=settings.tool_env.get("PATH"))
    if npm is None:
        raise OrchestraError("npm is not installed on this worker: JavaScript cannot be linted",
                             hint="apt-get install npm")
    home.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="eslint-", dir=home.parent))
    try:
        (staging / "package.json").write_text(json.dumps({"name": "orchestra-eslint", "private": True}))
        (staging / "eslint.config.mjs").write_text(CONFIG)
        env = {"NPM_CONFIG_CAFILE": str(settings.build_ca_bundle)} if settings.build_ca_bundle else {}
        proc = run_tool([npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--save-exact",
                         *ESLINT_PACKAGES], cwd=staging, settings=settings, timeout=INSTALL_TIMEOUT_S,
                        extra_env={"HOME": str(staging), **env})
        if proc.returncode != 0:
            raise OrchestraError(f"npm could not install ESLint: {proc.stderr.strip()[-400:]}",
                                 hint="the worker needs the npm registry (and ORCHESTRA_BUILD_CA_BUNDLE "
                                      "behind a TLS-intercepting proxy)")
        try:
            staging.rename(home)  # atomic: a concurrent install of the same versions loses harmlessly
        except OSError:
            if not (home / "node_modules" / ".bin" / "eslint").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return home


def eslint_findings(root: Path, homes: list[Path], settings: Settings) -> list[Finding]:
    tools = eslint_home(settings)
    targets = [str(h.relative_to(root)) or "." for h in homes]
    proc = run_tool(["node", str(tools / "node_modules" / "eslint" / "bin" / "eslint.js"), "--format", "json",
                     "--no-warn-ignored", "-c", str(tools / "eslint.config.mjs"), *targets],
                    cwd=root, settings=settings, timeout=ESLINT_TIMEOUT_S)
    if proc.returncode not in (0, 1):
        return [Finding(tool="eslint", rule="eslint-error", message=proc.stderr.strip()[-300:],
                        severity=Severity.WARNING)]
    return [_finding(item, message, root) for item in json.loads(proc.stdout or "[]")
            for message in item["messages"]]


def _finding(item: dict, message: dict, root: Path) -> Finding:
    rule = message.get("ruleId")
    gate = rule in GATE_RULES or message.get("fatal")
    return Finding(tool="eslint", rule=rule or "parse-error", message=message["message"],
                   file=str(Path(item["filePath"]).resolve().relative_to(root.resolve())),
                   line=message.get("line"), severity=Severity.ERROR if gate else Severity.WARNING,
                   suggestion=f"https://eslint.org/docs/latest/rules/{rule}" if rule else None)


def tsc_findings(home: Path, root: Path, settings: Settings) -> list[Finding]:
    """``tsc --noEmit`` of one TypeScript package: each error with its file, line and TS code."""
    where = str((home / "tsconfig.json").relative_to(root))
    try:
        tools, modules = eslint_home(settings), ensure_modules(home, settings)
    except OrchestraError as exc:  # without its dependencies' types the package cannot be checked
        return [Finding(tool="tsc", rule="tsc-unavailable", file=where, message=exc.message, suggestion=exc.hint)]
    work = Path(tempfile.mkdtemp(prefix="tsc-", dir=modules))  # beside node_modules: tsc finds it walking up
    try:
        shutil.copytree(home, work, ignore=SKIP_COPY, symlinks=True, dirs_exist_ok=True)
        proc = run_tool(["node", str(tools / "node_modules" / "typescript" / "bin" / "tsc"), "--noEmit",
                         "--pretty", "false", "-p", "tsconfig.json"], cwd=work, settings=settings,
                        timeout=TSC_TIMEOUT_S)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    findings = [_tsc_finding(match, home, root) for match in map(_TSC_LINE.match, proc.stdout.splitlines()) if match]
    if proc.returncode != 0 and not findings:
        findings.append(Finding(tool="tsc", rule="tsc-error", file=where,
                                message=(proc.stderr or proc.stdout).strip()[-300:] or f"tsc exited {proc.returncode}"))
    return findings


def _tsc_finding(match: re.Match[str], home: Path, root: Path) -> Finding:
    path = Path(os.path.normpath(home / (match["file"] or "tsconfig.json")))
    file = str(path.relative_to(root)) if path.is_relative_to(root) else match["file"]  # else a dependency's .d.ts
    return Finding(tool="tsc", rule=match["code"], message=match["message"], file=file,
                   line=int(match["line"]) if match["line"] else None,
                   suggestion=f"npx tsc --noEmit in {home.relative_to(root) or '.'} shows it in context")
