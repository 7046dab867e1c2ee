"""Isolated virtualenvs for running users' code, cached by what they contain.

With ``Settings.sandbox == "docker"`` (the default) a virtualenv is built in an install container and
its python runs only in test containers (:mod:`agents.testing.sandbox`); :func:`run_python` is the one
way to run it, wherever it lives. Each run mounts the cached virtualenv read-only, so no run can change
what another one imports.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from agents.testing import sandbox
from agents.tools import run_tool
from orchestra.errors import OrchestraError
from orchestra.settings import Settings

logger = logging.getLogger(__name__)

# What every test environment gets on top of the service's own requirements.
TEST_TOOLS = ("pytest==9.2.0", "coverage==7.17.3")
INSTALL_TIMEOUT_S = 600


def requirement_files(service_dir: Path) -> list[Path]:
    """The service's requirement files, runtime first."""
    names = ("requirements.txt", "requirements-dev.txt", "requirements-test.txt")
    return [service_dir / n for n in names if (service_dir / n).is_file()]


def ensure_venv(service_dir: Path, settings: Settings) -> Path:
    """A virtualenv with the service's requirements and the test tools; returns its python."""
    files = requirement_files(service_dir)
    boxed = settings.sandbox == "docker"
    digest = hashlib.sha256((f"box:{sandbox.image_id(settings)}" if boxed else sys.version).encode())
    for tool in TEST_TOOLS:
        digest.update(tool.encode())
    for path in files:
        digest.update(path.read_bytes())
    home = settings.cache / "venvs" / f"{'box-' if boxed else ''}{digest.hexdigest()[:16]}"
    python = home / "bin" / "python"
    if python.exists():
        return python
    home.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="venv-", dir=home.parent))
    try:
        _build(staging, files, service_dir, settings)
        staging.rename(home)  # atomic: a concurrent build of the same venv loses harmlessly
    except OSError:
        if not python.exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return python


def run_python(python: Path, args: list[str], *, cwd: Path, settings: Settings, timeout: float,
               writable: Iterable[Path] = (), extra_env: dict[str, str] | None = None,
               ) -> subprocess.CompletedProcess[str]:
    """Run a virtualenv's python: in a test container when it was built in one, else as a host tool.

    ``writable`` lists the directories the run writes into (reports, coverage data); in a container
    everything else is read-only.
    """
    if sandbox.is_sandboxed(python):
        return sandbox.run_python(python, args, cwd=cwd, settings=settings, timeout=timeout, writable=writable,
                                  extra_env=extra_env)
    return run_tool([str(python), *args], cwd=cwd, settings=settings, timeout=timeout, extra_env=extra_env)


def _build(home: Path, files: list[Path], service_dir: Path, settings: Settings) -> None:
    logger.info("building a test virtualenv for %s", service_dir)
    what = f"installing {', '.join(p.name for p in files) or 'the test tools'}"
    if settings.sandbox == "docker":
        # Wheels only: a package's setup code would otherwise run with the network in reach.
        _must(sandbox.install(home, files, TEST_TOOLS, settings=settings, timeout=INSTALL_TIMEOUT_S), what,
              hint="check the requirements file: every line must name a package published as a wheel "
                   "(the sandbox installs no source distributions)")
        return
    _must(run_tool([sys.executable, "-m", "venv", str(home)], cwd=service_dir, settings=settings, timeout=120),
          "creating the virtualenv")
    args = [str(home / "bin" / "python"), "-m", "pip", "install", "--quiet", *TEST_TOOLS]
    for path in files:
        args += ["-r", str(path)]
    _must(run_tool(args, cwd=service_dir, settings=settings, timeout=INSTALL_TIMEOUT_S), what)


def _must(proc: subprocess.CompletedProcess[str], what: str,
          hint: str = "check the requirements file: every line must name an installable package") -> None:
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise OrchestraError(f"{what} failed: {' / '.join(tail)}", hint=hint)
