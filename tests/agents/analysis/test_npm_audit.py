"""``npm audit`` in the analysis gate: the real npm against a local registry speaking npm's bulk advisory
protocol on loopback (the proxy here refuses the public one with 405)."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.analysis.npm_audit import MAX_TEXT, audit_findings
from agents.analysis.stage import verdict
from agents.findings import Finding, Severity
from bot.slack.texts import escape
from orchestra.settings import Settings
from tests.support.npm_registry import NpmRegistry, npm_registry

MANIFEST = {"name": "api", "version": "1.0.0", "private": True,
            "dependencies": {"left-pad": "^1.1.0", "mkdirp": "0.5.1"}}
LOCK = {"name": "api", "version": "1.0.0", "lockfileVersion": 3, "requires": True, "packages": {
    "": {"name": "api", "version": "1.0.0", "dependencies": MANIFEST["dependencies"]},
    "node_modules/left-pad": {"version": "1.1.0"},
    "node_modules/mkdirp": {"version": "0.5.1", "dependencies": {"minimist": "0.0.8"}},
    "node_modules/minimist": {"version": "0.0.8"}}}


@pytest.fixture
def registry() -> Iterator[NpmRegistry]:
    with npm_registry() as local:
        yield local


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    home = tmp_path / "repo" / "api"
    home.mkdir(parents=True)
    (home / "package.json").write_text(json.dumps(MANIFEST))
    (home / "package-lock.json").write_text(json.dumps(LOCK))
    (tmp_path / "repo" / "docs").mkdir()  # a folder without package.json is not audited
    return tmp_path / "repo"


def audit(repo: Path, settings: Settings, registry: NpmRegistry) -> list[Finding]:
    local = settings.with_(tool_env={**settings.tool_env, "npm_config_registry": registry.url})
    started = time.monotonic()
    findings = audit_findings([repo / "api"], repo, local)
    assert time.monotonic() - started < 30
    return findings


def test_a_high_advisory_on_a_locked_dependency_fails_the_gate(repo: Path, settings: Settings,
                                                               registry: NpmRegistry) -> None:
    registry.advise("minimist", id=1179, severity="high", vulnerable="<0.2.1", title="Prototype Pollution in minimist",
                    versions=("0.0.8", "0.2.1", "1.2.8"))
    findings = audit(repo, settings, registry)
    # npm asked for every locked version, the transitive one included
    assert registry.bulk_requests == [{"left-pad": ["1.1.0"], "mkdirp": ["0.5.1"], "minimist": ["0.0.8"]}]
    [minimist] = [f for f in findings if "in minimist" in f.message]
    assert minimist.severity is Severity.ERROR and minimist.file == "api/package-lock.json"
    assert "Prototype Pollution in minimist" in minimist.message
    assert "https://github.com/advisories/GHSA-test-1179" in minimist.message and "<0.2.1" in minimist.message
    # the direct dependency that pulls it in is named in package.json, where it can be upgraded
    [mkdirp] = [f for f in findings if "in mkdirp" in f.message]
    assert mkdirp.file == "api/package.json" and "through minimist" in mkdirp.message
    result = verdict(findings)
    assert not result.passed and "minimist" in result.summary


def test_a_moderate_advisory_is_listed_without_blocking(repo: Path, settings: Settings,
                                                        registry: NpmRegistry) -> None:
    registry.advise("left-pad", id=7, severity="moderate", vulnerable="<1.3.0", title="Padding off by one",
                    versions=("1.1.0", "1.3.0"))
    [finding] = audit(repo, settings, registry)
    assert finding.severity is Severity.WARNING and finding.file == "api/package.json"
    assert "moderate vulnerability in left-pad 1.1.0 (direct dependency)" in finding.message
    assert finding.suggestion == "npm audit fix in api, then commit package-lock.json"  # npm found 1.3.0
    assert verdict([finding]).passed


def test_no_advisory_gives_no_finding(repo: Path, settings: Settings, registry: NpmRegistry) -> None:
    assert audit(repo, settings, registry) == []
    assert len(registry.bulk_requests) == 1  # it was asked: an empty answer, not a skipped audit


@pytest.mark.parametrize("status", [405, 500])
def test_a_refusing_advisory_service_is_a_warning_not_a_silent_pass(repo: Path, settings: Settings,
                                                                    registry: NpmRegistry, status: int) -> None:
    registry.advise("minimist", id=1, severity="critical", vulnerable="<1", title="x")
    registry.status = status
    [finding] = audit(repo, settings, registry)
    assert finding.severity is Severity.WARNING and finding.rule == "npm-audit-unavailable"
    assert finding.message == (f"npm audit could not reach {registry.url}'s advisory service (HTTP {status}): "
                               "dependencies were not checked for known vulnerabilities")
    assert "not checked" in verdict([finding]).data["findings"][0]["message"]


def test_an_unreachable_registry_is_a_warning_naming_it(repo: Path, settings: Settings,
                                                        registry: NpmRegistry) -> None:
    gone = NpmRegistry(url="http://127.0.0.1:9")  # the discard port: nothing listens, connection refused
    [finding] = audit(repo, settings, gone)
    assert finding.severity is Severity.WARNING
    assert finding.message.startswith("npm audit could not reach http://127.0.0.1:9's advisory service (")
    assert "were not checked" in finding.message


def test_the_services_npmrc_chooses_the_registry(repo: Path, settings: Settings, registry: NpmRegistry) -> None:
    registry.advise("left-pad", id=8, severity="low", vulnerable="<1.3.0", title="low one")
    (repo / "api" / ".npmrc").write_text(f"registry={registry.url}/\n")
    [finding] = audit_findings([repo / "api"], repo, settings)  # no registry in the environment
    assert "low one" in finding.message and registry.bulk_requests


def test_a_hostile_advisory_title_is_cleaned_cut_short_and_escaped(repo: Path, settings: Settings,
                                                                   registry: NpmRegistry) -> None:
    title = "<!channel> <https://evil.example|click> \x1b[31mred\x00\u202e\n" + "A" * 5000
    registry.advise("minimist", id=666, severity="critical", vulnerable="<1", title=title)
    registry.advisories["minimist"][0]["url"] = "javascript:alert(1)"
    findings = audit(repo, settings, registry)
    [minimist] = [f for f in findings if "in minimist" in f.message]
    assert not any(ord(ch) < 32 or ch in "\x7f\u202e" for ch in minimist.message)
    assert "A" * (MAX_TEXT + 1) not in minimist.message and "…" in minimist.message
    assert "javascript:" not in minimist.message and "no advisory URL" in minimist.message
    shown = escape(verdict(findings).summary)  # how the Slack views show a stage's summary
    assert "<!channel>" not in shown and "&lt;!channel&gt;" in shown and "<https://evil" not in shown


def test_a_package_without_a_lock_file_is_not_audited(repo: Path, settings: Settings,
                                                      registry: NpmRegistry) -> None:
    (repo / "api" / "package-lock.json").unlink()
    assert audit(repo, settings, registry) == [] and registry.bulk_requests == []


def test_a_hostile_registry_cannot_plant_an_advisory_for_later_audits(repo: Path, settings: Settings,
                                                                      registry: NpmRegistry) -> None:
    # npm caches advisories by package and id alone: a repository's own registry answers first with a
    # harmless-looking copy of advisory 4242...
    registry.advise("minimist", id=4242, severity="low", vulnerable="<1", title="nothing to see")
    (repo / "api" / ".npmrc").write_text(f"registry={registry.url}/\n")
    planted = audit_findings([repo / "api"], repo, settings)
    assert planted and all(f.severity is Severity.WARNING for f in planted)
    (repo / "api" / ".npmrc").unlink()
    with npm_registry() as honest:  # ...then the real registry reports it critical for the next repository
        honest.advise("minimist", id=4242, severity="critical", vulnerable="<1", title="Remote code execution")
        findings = audit(repo, settings, honest)
    [minimist] = [f for f in findings if "in minimist" in f.message]
    assert minimist.severity is Severity.ERROR and "Remote code execution" in minimist.message
    assert not list(settings.cache.glob("npm-audit-*"))  # each audit's cache is gone after it


def test_without_npm_the_gate_says_the_dependencies_were_not_checked(repo: Path, settings: Settings,
                                                                     tmp_path: Path) -> None:
    [finding] = audit_findings([repo / "api"], repo, settings.with_(tool_env={"PATH": str(tmp_path)}))
    assert finding.severity is Severity.WARNING and finding.file == "api/package-lock.json"
    assert finding.message == ("npm is not installed on this worker: dependencies were not checked for known "
                               "vulnerabilities")


def test_an_advisory_service_that_never_answers_is_a_warning_after_the_time_limit(
        repo: Path, settings: Settings, registry: NpmRegistry) -> None:
    registry.advise("minimist", id=31, severity="critical", vulnerable="<1", title="never sent")
    registry.delay_s = 20
    local = settings.with_(tool_env={**settings.tool_env, "npm_config_registry": registry.url})
    started = time.monotonic()
    [finding] = audit_findings([repo / "api"], repo, local, timeout=3)
    assert time.monotonic() - started < 10
    assert finding.severity is Severity.WARNING and finding.rule == "npm-audit-unavailable"
    assert finding.message == (f"npm audit could not reach {registry.url}'s advisory service (npm did not finish "
                               "within 3s): dependencies were not checked for known vulnerabilities")


def test_the_fix_names_the_version_npm_found(repo: Path, settings: Settings, registry: NpmRegistry) -> None:
    registry.advise("minimist", id=1180, severity="critical", vulnerable="<0.2.1", title="Prototype Pollution",
                    versions=("0.0.8", "0.2.1", "1.2.8"))
    registry.packuments["mkdirp"] = {"name": "mkdirp", "dist-tags": {"latest": "1.0.4"}, "versions": {
        "0.5.1": {"name": "mkdirp", "version": "0.5.1", "dependencies": {"minimist": "0.0.8"},
                  "dist": {"tarball": f"{registry.url}/mkdirp/-/mkdirp-0.5.1.tgz"}},
        "1.0.4": {"name": "mkdirp", "version": "1.0.4",
                  "dist": {"tarball": f"{registry.url}/mkdirp/-/mkdirp-1.0.4.tgz"}}}}
    findings = audit(repo, settings, registry)
    [mkdirp] = [f for f in findings if "in mkdirp" in f.message]
    assert mkdirp.severity is Severity.ERROR
    assert mkdirp.suggestion == "npm install mkdirp@1.0.4 in api (a semver-major upgrade: check its changelog)"
