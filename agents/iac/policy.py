"""The policy scan before plan: checkov over the Terraform, offline, with a reviewed set of checks that block.

* Which checks block: open-source checkov gives no severity offline (severity comes from the Prisma
  platform), so :data:`BLOCKING` is this project's reviewed list (admin ports open to the world, public
  S3, unencrypted state-bearing storage, administrator IAM policies, credentials in code). A finding that
  checkov itself marks HIGH or CRITICAL blocks too. Every other finding is listed, capped, and passes.
* What checkov sees: a copy of the ``*.tf`` files only, laid out as in the repository, in a folder of the
  run's own. A repository's ``.checkov.yaml`` (which checkov honours in the folder it scans and could skip
  any check) never reaches it, nor does anything else of the checkout. A ``#checkov:skip=`` comment on a
  blocking check does not switch it off: the skipped finding still blocks.
* How it runs: its own venv (``scripts/setup`` installs it into ``.venv-tools``), an environment of PATH
  and a scratch HOME only (no API key, no proxy), ``--skip-download`` (no policies from the platform),
  no version check on PyPI (which checkov otherwise makes), no external modules, in a network namespace of
  its own (``unshare -rn``) where the kernel allows one, a time limit after which its whole process group
  is stopped. Its report of the very same files by the very same checkov is kept in the worker's cache and
  read back (generated Terraform is the same for the same configuration): the verdict is made again from
  it each time.
* Its output is the repository's words: only check id, file, line and resource address are read, each
  capped and stripped of backticks and control characters (the Slack renderer escapes the rest).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestra.errors import StageFailed
from orchestra.settings import PROJECT_ROOT

TOOL_VENV = PROJECT_ROOT / ".venv-tools"
TIMEOUT_S = 120.0
MAX_SHOWN = 8  # blocking findings named in the thread; the rest are counted
MAX_LISTED = 10  # check ids of the passing findings named in the thread
MAX_KEPT = 50  # findings kept in the event's data
MAX_OUTPUT = 20_000_000  # checkov's JSON beyond this is not read
HIGH = frozenset({"HIGH", "CRITICAL"})
CACHE_FORMAT = 1  # bump when the arguments checkov runs with change
MAX_CACHED = 256

# Reviewed: the checks treated as high severity, each with what to do about it.
BLOCKING: dict[str, str] = {
    "CKV_AWS_24": "a security group open to 0.0.0.0/0 on port 22 (SSH): allow only known addresses",
    "CKV_AWS_25": "a security group open to 0.0.0.0/0 on port 3389 (RDP): allow only known addresses",
    "CKV_AWS_277": "a security group open to 0.0.0.0/0 on every port: open only the ports served",
    "CKV_AWS_20": "an S3 bucket whose ACL lets anyone read it: make the ACL private",
    "CKV_AWS_57": "an S3 bucket whose ACL lets anyone write to it: make the ACL private",
    "CKV_AWS_70": "an S3 bucket policy that allows any principal: name the principals",
    "CKV_AWS_16": "an RDS instance not encrypted at rest: set storage_encrypted = true",
    "CKV_AWS_17": "an RDS instance reachable from the internet: set publicly_accessible = false",
    "CKV_AWS_3": "an EBS volume not encrypted: set encrypted = true",
    "CKV_AWS_8": "an instance's or launch configuration's EBS not encrypted: set encrypted = true on its block devices",
    "CKV_AWS_42": "an EFS file system not encrypted: set encrypted = true",
    "CKV_AWS_1": "an IAM policy document granting \"*\" on \"*\" (administrator): grant the actions needed",
    "CKV_AWS_62": "an IAM policy granting \"*\" on \"*\" (administrator): grant the actions needed",
    "CKV_AWS_41": "AWS access keys written in the provider block: use the worker's credentials chain",
    "CKV_AWS_45": "credentials in a Lambda function's environment: keep them in Secrets Manager",
    "CKV_AWS_46": "credentials in an instance's user data: keep them in Secrets Manager",
    "CKV_GCP_102": "a Cloud Run service anyone may invoke (allUsers or allAuthenticatedUsers): name the invokers",
    "CKV_GCP_101": "an Artifact Registry repository anyone may read (allUsers or allAuthenticatedUsers): name "
                   "the readers",
    "CKV_AZURE_137": "a container registry with its admin account (a shared password) on: pull with an identity",
    "CKV_AZURE_138": "a container registry anyone may pull from: set anonymous_pull_enabled = false",
}


@dataclass(frozen=True)
class Finding:
    check: str
    file: str
    line: int
    resource: str
    title: str
    skipped: bool = False  # switched off by a checkov:skip comment in the file

    def shown(self) -> str:
        why = BLOCKING.get(self.check, self.title)
        note = " (a `checkov:skip` comment does not switch off a blocking check)" if self.skipped else ""
        return f"{self.file}:{self.line}: {self.check} on {self.resource}: {why}{note}"

    def data(self) -> dict[str, Any]:
        return {"check": self.check, "file": self.file, "line": self.line, "resource": self.resource,
                "title": self.title, "skipped": self.skipped}


@dataclass
class Report:
    blocking: list[Finding] = field(default_factory=list)
    others: list[Finding] = field(default_factory=list)
    passed: int = 0
    version: str = ""

    def line(self) -> str:
        """``checkov 3.3.30: 0 blocking, 25 other findings (CKV_AWS_2 ×1, ...)`` for the thread."""
        counts = Counter(f.check for f in self.others)
        named = ", ".join(f"{c} ×{n}" for c, n in sorted(counts.items())[:MAX_LISTED])
        more = f", {len(counts) - MAX_LISTED} more checks" if len(counts) > MAX_LISTED else ""
        listed = f" ({named}{more})" if counts else ""
        return (f"checkov {self.version}: {len(self.blocking)} blocking, {len(self.others)} other finding(s)"
                f"{listed}, {self.passed} passed")

    def data(self) -> dict[str, Any]:
        return {"checkov": self.version, "passed": self.passed, "blocking": [f.data() for f in self.blocking],
                "others": [f.data() for f in self.others[:MAX_KEPT]], "others_count": len(self.others)}


def checkov_binary(venv: Path = TOOL_VENV, path: str | None = None) -> str:
    """checkov from the tools venv, else on ``path``; a clear error when neither has it."""
    own = venv / "bin" / "checkov"
    if own.is_file() and os.access(own, os.X_OK):
        return str(own)
    found = shutil.which("checkov", path=path)
    if found:
        return found
    raise StageFailed(f"checkov is not installed (looked for {own} and on the worker's PATH)",
                      hint="run scripts/setup, which installs checkov 3.3.30 into .venv-tools; nothing was planned")


def terraform_files(folder: Path) -> list[Path]:
    """The ``*.tf`` files under ``folder`` (not in ``.terraform``); one that leads outside it is refused."""
    root = folder.resolve()
    found = []
    for path in sorted(folder.rglob("*.tf")):
        if ".terraform" in path.relative_to(folder).parts or not path.is_file():
            continue
        if root not in path.resolve().parents:
            raise StageFailed(f"{path.relative_to(folder)} leads outside {folder.name}/ (a symbolic link): it is "
                              "not scanned", hint="keep the Terraform files inside the folder; nothing was planned")
        found.append(path)
    return found


def scan(folder: Path, shown: str, scratch: Path, *, binary: str | None = None, timeout: float = TIMEOUT_S,
         cache: Path | None = None) -> Report:
    """checkov over the ``*.tf`` files of ``folder``; raises StageFailed naming each blocking finding. With
    ``cache``, checkov's report of the very same files by the very same checkov is read from there."""
    files = terraform_files(folder)
    binary = binary or checkov_binary()
    key = cache_key(binary, folder, files)
    kept = cache / f"{key}.json" if cache is not None else None
    if kept is not None and kept.is_file():
        out = kept.read_text()
    else:
        out = checkov_output(folder, files, scratch, binary=binary, timeout=timeout)
        if kept is not None:
            _keep(kept, out)
    report = parse(out, shown)
    if report.blocking:
        named = "; ".join(f.shown() for f in report.blocking[:MAX_SHOWN])
        more = f"; and {len(report.blocking) - MAX_SHOWN} more" if len(report.blocking) > MAX_SHOWN else ""
        raise StageFailed(f"policy scan ({report.line()}) blocks: {named}{more}",
                          hint="fix each finding in the file and line named; nothing was planned or changed")
    return report


def cache_key(binary: str, folder: Path, files: list[Path]) -> str:
    """The files (paths and bytes), the checkov installation (its path, size and time) and how it is run."""
    digest = hashlib.sha256(f"{CACHE_FORMAT}\0{Path(binary).resolve()}\0".encode())
    stat = Path(binary).resolve().stat()
    digest.update(f"{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    for path in files:
        content = path.read_bytes()
        digest.update(f"{path.relative_to(folder)}\0{len(content)}\0".encode() + content)
    return digest.hexdigest()


def _keep(path: Path, out: str) -> None:
    """checkov's report into the cache (written whole, then renamed); the oldest go past MAX_CACHED."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(out)
    os.replace(partial, path)
    kept = sorted(path.parent.glob("*.json"), key=lambda p: p.stat().st_mtime)
    for old in kept[:-MAX_CACHED]:
        old.unlink(missing_ok=True)


def run_checkov(folder: Path, files: list[Path], shown: str, scratch: Path, *, binary: str,
                timeout: float) -> Report:
    return parse(checkov_output(folder, files, scratch, binary=binary, timeout=timeout), shown)


def checkov_output(folder: Path, files: list[Path], scratch: Path, *, binary: str, timeout: float) -> str:
    copy = _copy(folder, files, scratch / "policy")
    home = scratch / "policy-home"
    home.mkdir(parents=True, exist_ok=True)
    config = home / "checkov.yaml"
    config.write_text("{}\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "BC_SKIP_MAPPING": "TRUE", "LANG": "C.UTF-8",
           "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false", "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"}
    args = [*no_network(), binary, "--config-file", str(config), "-d", str(copy), "--framework", "terraform",
            "-o", "json", "--skip-download", "--compact", "--download-external-modules", "false", "--soft-fail"]
    return _run(args, cwd=home, env=env, timeout=timeout)


@functools.lru_cache(maxsize=1)
def no_network() -> tuple[str, ...]:
    """``unshare -rn``: checkov in a network namespace of its own, with no way out, where the kernel lets an
    unprivileged process make one; nothing (the offline flags alone) where it does not."""
    unshare = shutil.which("unshare", path="/usr/bin:/bin")
    if unshare is None:
        return ()
    try:
        done = subprocess.run([unshare, "-rn", "true"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return (unshare, "-rn") if done.returncode == 0 else ()


def parse(out: str, shown: str) -> Report:
    """checkov's JSON (one report, or a list of them): its findings sorted into blocking and others."""
    try:
        loaded = json.loads(out[:MAX_OUTPUT]) if out.strip() else {}
    except ValueError as exc:
        raise StageFailed(f"checkov gave no readable report: {_clean(out[-300:], 300)}",
                          hint="run checkov on the folder by hand to see why; nothing was planned") from exc
    reports = loaded if isinstance(loaded, list) else [loaded]
    report = Report()
    for part in reports:
        if not isinstance(part, dict):
            continue
        summary = part.get("summary") or {}
        report.version = _clean(summary.get("checkov_version", report.version), 20)
        report.passed += int(summary.get("passed") or 0)
        results = part.get("results") or {}
        for kind in ("failed_checks", "skipped_checks"):
            for raw in results.get(kind) or []:
                finding = _finding(raw, shown, skipped=kind == "skipped_checks")
                severity = str(raw.get("severity") or "").upper()
                if finding.check in BLOCKING or severity in HIGH:
                    report.blocking.append(finding)
                elif not finding.skipped:
                    report.others.append(finding)
    report.blocking.sort(key=lambda f: (f.file, f.line, f.check))
    report.others.sort(key=lambda f: (f.file, f.line, f.check))
    return report


def _finding(raw: dict[str, Any], shown: str, *, skipped: bool) -> Finding:
    lines = raw.get("file_line_range") or [0]
    try:
        line = int(lines[0])
    except (TypeError, ValueError, IndexError):
        line = 0
    where = _clean(str(raw.get("file_path") or "?").lstrip("/"), 200)
    return Finding(check=_clean(raw.get("check_id") or "?", 40), file=f"{shown.rstrip('/')}/{where}", line=line,
                   resource=_clean(raw.get("resource") or "?", 120), title=_clean(raw.get("check_name") or "", 160),
                   skipped=skipped)


def _clean(text: object, limit: int) -> str:
    """Hostile text for one line of the thread: no control characters or backticks, at most ``limit``."""
    flat = re.sub(r"[\x00-\x1f\x7f`]", " ", str(text))
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def _copy(folder: Path, files: list[Path], target: Path) -> Path:
    """The ``*.tf`` files alone under ``target``, at their paths relative to ``folder`` (read, not linked)."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for path in files:
        rel = path.relative_to(folder)
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(path.read_bytes())
    return target


def _run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> str:
    with subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            _kill(proc)
            raise StageFailed(f"the policy scan (checkov) did not finish within {timeout:.0f}s and was stopped",
                              hint="a very large Terraform tree? nothing was planned or changed") from exc
        except BaseException:
            _kill(proc)
            raise
    if proc.returncode != 0:
        raise StageFailed(f"checkov failed (exit {proc.returncode}): {_clean((err or out)[-300:], 300)}",
                          hint="run scripts/setup to reinstall it; nothing was planned")
    return out


def _kill(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()
