"""Isolated virtualenvs for running users' code, cached by what they contain."""
from __future__ import annotations

import hashlib
import logging
import shutil
import sys
import tempfile
from pathlib import Path

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
    digest = hashlib.sha256(sys.version.encode())
    for tool in TEST_TOOLS:
        digest.update(tool.encode())
    for path in files:
        digest.update(path.read_bytes())
    home = settings.cache / "venvs" / digest.hexdigest()[:16]
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


def _build(home: Path, files: list[Path], service_dir: Path, settings: Settings) -> None:
    logger.info("building a test virtualenv for %s", service_dir)
    _must(run_tool([sys.executable, "-m", "venv", str(home)], cwd=service_dir, settings=settings, timeout=120),
          "creating the virtualenv")
    args = [str(home / "bin" / "python"), "-m", "pip", "install", "--quiet", *TEST_TOOLS]
    for path in files:
        args += ["-r", str(path)]
    _must(run_tool(args, cwd=service_dir, settings=settings, timeout=INSTALL_TIMEOUT_S),
          f"installing {', '.join(p.name for p in files) or 'the test tools'}")


def _must(proc, what: str) -> None:  # type: ignore[no-untyped-def]
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise OrchestraError(f"{what} failed: {' / '.join(tail)}",
                             hint="check the requirements file: every line must name an installable package")
