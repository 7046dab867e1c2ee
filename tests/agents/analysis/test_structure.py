"""Structure findings on small repositories written into tmp_path."""
from __future__ import annotations

from pathlib import Path

from agents.analysis.structure import structure_findings
from tests.support.files import write_files


def rules(root: Path) -> list[tuple[str, str | None, int | None]]:
    return sorted((f.rule, f.file, f.line) for f in structure_findings(root))


def test_a_consistent_repository_has_no_findings(tmp_path: Path) -> None:
    write_files(tmp_path, {
        "shop/__init__.py": "", "shop/models.py": "from .db import q\nfrom . import db\n",
        "shop/db.py": "import json.decoder\nq = 1\n", "shop/api/__init__.py": "",
        "shop/api/routes.py": "from ..models import q\nfrom shop.api import routes\nimport shop.db\n",
        "tests/test_models.py": "from shop.models import q\n",
    })
    assert rules(tmp_path) == []


def test_imports_of_local_modules_that_do_not_exist(tmp_path: Path) -> None:
    write_files(tmp_path, {
        "shop/__init__.py": "", "shop/models.py": "from .db import q\nfrom .utils.text import slug\n",
        "app.py": "import os\n\nfrom shop.payments import charge\nimport shop.models\n",
        "tests/test_app.py": "import app\n",
    })
    findings = structure_findings(tmp_path)
    assert sorted((f.rule, f.file, f.line) for f in findings) == [
        ("STR001", "app.py", 3), ("STR001", "shop/models.py", 1), ("STR001", "shop/models.py", 2)]
    payments = next(f for f in findings if f.file == "app.py")
    assert "shop.payments" in payments.message and "shop/payments.py" in (payments.suggestion or "")


def test_package_without_init_among_packages_with_one(tmp_path: Path) -> None:
    write_files(tmp_path, {
        "svc/a/__init__.py": "", "svc/a/x.py": "", "svc/b/__init__.py": "", "svc/b/y.py": "",
        "svc/c/z.py": "", "pkg/__init__.py": "", "pkg/sub/m.py": "from .n import q\n", "pkg/sub/n.py": "",
        "scripts/tool.py": "", "bench/bench_x.py": "", "tests/test_x.py": "from svc.c.z import f\n",
    })
    assert [r for r in rules(tmp_path) if r[0] == "STR002"] == [
        ("STR002", "pkg/sub", None), ("STR002", "svc/c", None)]


def test_tests_directory_without_tests_and_code_without_tests(tmp_path: Path) -> None:
    write_files(tmp_path, {"legacy/billing.py": "def f():\n    return 1\n", "tests/conftest.py": "",
                     "tests/helpers.py": ""})
    assert rules(tmp_path) == [("STR003", "tests", None), ("STR004", None, None)]
