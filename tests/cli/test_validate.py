"""`orchestra validate [PATH]`: exit status and output."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from cli import validate
from orchestra.settings import PROJECT_ROOT, Settings

SHOP = PROJECT_ROOT / "examples" / "shop"
BROKEN = """\
project:
  name: shop
deployment:
  strategy: canery
  services:
    - name: api
      prot: 5000
"""


def run_module(*args: str, cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.validate", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_valid_repository_exits_0_with_a_summary() -> None:
    result = run_module(str(SHOP))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == (
        f"ok: {SHOP / 'devops_orchestra.yaml'}: project shop: services backend, frontend; "
        "environments production, staging, development (approval required: production)")


def test_invalid_file_prints_every_problem_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "devops_orchestra.yaml"
    path.write_text(BROKEN)
    result = run_module(str(path))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{path}:4: deployment.strategy: `canery` is not allowed; use one of blue-green, canary, rolling "
        "(did you mean `canary`?)",
        f"{path}:7: deployment.services[0].prot: unknown key (did you mean `port`?)",
    ]
    assert "2 problem(s)" in result.stderr


def test_default_path_is_the_current_directory() -> None:
    result = run_module(cwd=SHOP)
    assert result.returncode == 0 and "project shop" in result.stdout


def test_run_directly_with_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    validate.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["validate", str(tmp_path)])
    assert args.handler is validate.run
    (tmp_path / "app.py").write_text("app.run(port=5055)\n")
    assert validate.run(args, Settings()) == 0
    assert "no devops_orchestra.yaml" in capsys.readouterr().out
    (tmp_path / "devops_orchestra.yaml").write_text(BROKEN)
    assert validate.run(args, Settings()) == 1
    assert capsys.readouterr().out.count("\n") == 2


def test_missing_path_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(path=str(tmp_path / "nope.yaml"))
    assert validate.run(args, Settings()) == 1
    assert "no such file" in capsys.readouterr().err
