"""`orchestra inspect`: findings, risk and review printed for a repository and a diff."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cli import inspect
from orchestra.errors import OrchestraError
from orchestra.settings import Settings

DIFF = """diff --git a/app.py b/app.py
--- a/app.py
+++ b/app.py
@@ -1,1 +1,2 @@
 import yaml
+import pdb; pdb.set_trace()
"""


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    inspect.add_parser(parser.add_subparsers())
    return parser.parse_args(["inspect", *argv])


def test_inspect_prints_findings_risk_and_review(tmp_path: Path, settings: Settings,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "requirements.txt").write_text("")
    (tmp_path / "app.py").write_text("import yaml\nimport pdb; pdb.set_trace()\n")
    (tmp_path / "change.diff").write_text(DIFF)
    assert inspect.run(parse([str(tmp_path), "--diff", str(tmp_path / "change.diff")]), settings) == 1
    out = capsys.readouterr().out
    assert "medium risk: application code changed (app.py)" in out
    assert "rule-based review only" in out
    assert "error   app.py:1: [deps DEP001] `import yaml` needs the distribution `PyYAML`" in out
    assert "app.py:2: [review debugger-left-in]" in out
    assert "STR004" in out and out.strip().endswith("other finding(s)")


def test_inspect_says_what_is_wrong_with_its_input(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(OrchestraError, match="is not a directory"):
        inspect.run(parse([str(tmp_path / "nope")]), settings)
    with pytest.raises(OrchestraError, match="no diff file"):
        inspect.run(parse([str(tmp_path), "--diff", str(tmp_path / "missing.diff")]), settings)
