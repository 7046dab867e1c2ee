"""The policy scan before plan: checkov over the Terraform, offline; its report is read, and what blocks
decided, by :mod:`agents.iac.policy_report` (a reviewed set of checks).

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
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from agents.iac.policy_report import Report, clean, parse
from agents.tools import run_in_group
from orchestra.errors import StageFailed
from orchestra.settings import PROJECT_ROOT

TOOL_VENV = PROJECT_ROOT / ".venv-tools"
TIMEOUT_S = 120.0
MAX_SHOWN = 8  # blocking findings named in the thread; the rest are counted
CACHE_FORMAT = 1  # bump when the arguments checkov runs with change
MAX_CACHED = 256


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
    try:
        done = run_in_group(args, cwd=cwd, env=env, timeout=timeout)  # SIGKILLed at once: checkov holds no state
    except subprocess.TimeoutExpired as exc:
        raise StageFailed(f"the policy scan (checkov) did not finish within {timeout:.0f}s and was stopped",
                          hint="a very large Terraform tree? nothing was planned or changed") from exc
    if done.returncode != 0:
        said = clean((done.stderr or done.stdout)[-300:], 300)
        raise StageFailed(f"checkov failed (exit {done.returncode}): {said}",
                          hint="run scripts/setup to reinstall it; nothing was planned")
    return done.stdout
