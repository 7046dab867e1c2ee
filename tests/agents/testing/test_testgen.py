"""Test generation on the legacy fixture repository, in a real isolated virtualenv.

The deterministic generator and the LLM path (real SDK against the local Messages API server)
both go through the prover: tests that do not run, fail, add nothing or catch no mutant are dropped.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from redis import Redis

from agents.testing.codemap import code_map, measure
from agents.testing.mutation import mutants
from agents.testing.testgen import generate_tests
from orchestra.llm import LLM
from orchestra.settings import PROJECT_ROOT, Settings
from tests.support.fake_anthropic import fake_anthropic

LEGACY = Path(__file__).resolve().parents[2] / "fixtures" / "legacy_repo"
KEY = "sk-ant-testgen"


@pytest.fixture(scope="session")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An isolated virtualenv with only pytest and coverage (the service has no requirements)."""
    home = tmp_path_factory.mktemp("testgen-venv")
    subprocess.run([sys.executable, "-m", "venv", str(home)], check=True, timeout=120)
    subprocess.run([str(home / "bin" / "python"), "-m", "pip", "install", "-q", "pytest==9.2.0",
                    "coverage==7.17.3"], check=True, timeout=600)
    return home / "bin" / "python"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return Path(shutil.copytree(LEGACY, tmp_path / "legacy_repo"))


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and ".pytest_cache" not in p.parts}


def test_deterministic_generation_proves_every_kept_test(repo: Path, venv_python: Path, settings: Settings,
                                                         tmp_path: Path) -> None:
    before = snapshot(repo)
    report = generate_tests(repo, python=venv_python, settings=settings, out_dir=tmp_path / "offer")
    assert report.source == "deterministic" and "ANTHROPIC_API_KEY unset" in report.note
    assert report.coverage_before == 0.0 and report.coverage_after >= 90.0
    assert len(report.kept) >= 8 and report.mutation_score >= 0.75
    assert all(c.mutants_killed >= 1 and c.lines_added >= 1 for c in report.kept)
    assert snapshot(repo) == before  # nothing is written into the repository
    offered = sorted(p.name for p in (tmp_path / "offer" / "tests").iterdir())
    assert offered == sorted(Path(f).name for f in report.kept_files)
    invoice = report.kept_files["tests/test_gen_legacy_billing_invoice_add.py"]  # a method: fresh instance
    assert "from legacy.billing import Invoice" in invoice and ").add(" in invoice and "is None" in invoice
    discount = report.kept_files["tests/test_gen_legacy_billing_apply_discount.py"]
    assert "from legacy.billing import PricingError" in discount and "pytest.raises(PricingError)" in discount
    data = report.event_data()
    assert data["coverage_after"] == report.coverage_after and set(data["files"]) == set(report.kept_files)
    assert len(data["verdicts"]) == len(report.candidates) and data["generator"] == "deterministic"
    # The offered files, copied into the repository, pass there and give the reported coverage.
    shutil.copytree(tmp_path / "offer" / "tests", repo / "tests")
    rc, cov, output = measure(venv_python, repo, [], settings=settings, data_dir=tmp_path / "cov")
    assert rc == 0, output
    assert cov.percent == report.coverage_after


def test_llm_tests_are_kept_only_when_proven(repo: Path, venv_python: Path, settings: Settings,
                                            redis: Redis) -> None:
    for other in ("text.py", "report.py"):  # billing alone keeps this test quick
        (repo / "legacy" / other).unlink()
    with fake_anthropic(api_key=KEY) as server:
        server.on_tool("record_generated_tests", lambda body: {"tests": model_answer(body)})
        llm = LLM(server.client_settings(settings), redis=redis)
        report = generate_tests(repo, python=venv_python, settings=settings, llm=llm, run_id="tg1",
                                test_timeout_s=30)  # roomy: a mutant run that times out counts as killed
        prompts = [r.body["messages"][0]["content"] for r in server.requests]
    by_file = {c.file_name: c for c in report.candidates}
    total = [c for c in report.candidates if c.target == "legacy.billing:Invoice.total"]
    hangs, *reasons = [c.reason for c in total]
    assert hangs.startswith("did not finish") and "within 30s" in hangs
    assert reasons[0].startswith("passes against all") and "does not check the result" in reasons[0]
    assert reasons[1].startswith("fails against the current code") and "assert 24.0 == 25.0" in reasons[1]
    assert reasons[2].startswith("does not parse") and reasons[3].startswith("kept")
    assert total[-1].origin == "llm" and total[-1].mutants_killed >= 1
    assert report.source == "llm+deterministic" and report.tokens > 0
    assert any(c.origin == "deterministic" and c.kept for c in by_file.values())
    assert any('<untrusted-data name="source"' in p and "def total" in p for p in prompts)


def model_answer(body: dict) -> list[dict]:
    """The fake model's answer: five candidates for Invoice.total, none for anything else."""
    if "Function: Invoice.total" not in body["messages"][0]["content"]:
        return []
    setup = "from legacy.billing import Invoice\n\n\ndef test_total():\n    inv = Invoice('acme')\n" \
            "    inv.add('pen', 10, 2.0)\n    inv.add('pad', 1, 5.0)\n"
    return [{"name": "hangs", "code": setup + "    while inv.total():\n        pass\n"},
            {"name": "asserts_nothing", "code": setup + "    inv.total()\n"},
            {"name": "wrong", "code": setup + "    assert inv.total() == 25.0\n"},
            {"name": "broken", "code": "def test_x(:\n    pass\n"},
            {"name": "good", "code": setup + "    assert inv.total() == 24.0\n"}]


def test_mutants_change_one_thing_in_the_target_only() -> None:
    source = (LEGACY / "legacy" / "billing.py").read_text()
    made = mutants(source, "bulk_price", limit=6)
    assert [m.kind for m in made][:4] == ["return", "compare", "binop", "if"]
    assert len({m.source for m in made}) == 6
    assert all("def apply_discount(price: float, percent: float) -> float:" in m.source for m in made)
    assert mutants(source, "Invoice.total", limit=2)[0].kind == "return"
    assert mutants(source, "missing") == []


def test_code_map_lists_functions_methods_and_classes(repo: Path) -> None:
    names = {(i.qualname, i.kind) for i in code_map(repo)}
    assert {("apply_discount", "function"), ("Invoice", "class"), ("Invoice.total", "method"),
            ("slugify", "function")} <= names



@pytest.mark.slow
def test_generation_on_the_example_frontend(tmp_path: Path, settings: Settings) -> None:
    """A Flask service that already has tests: only gaps are targeted, and kept tests still prove."""
    frontend = PROJECT_ROOT / "examples" / "shop" / "frontend"
    home = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(home)], check=True, timeout=120)
    subprocess.run([str(home / "bin" / "python"), "-m", "pip", "install", "-q", "pytest==9.2.0",
                    "coverage==7.17.3", "-r", str(frontend / "requirements.txt")], check=True, timeout=600)
    before = snapshot(frontend)
    report = generate_tests(frontend, python=home / "bin" / "python", settings=settings, min_coverage=100.0)
    assert snapshot(frontend) == before
    assert report.coverage_before > 50.0 and report.coverage_after >= report.coverage_before
    assert report.targets >= 1 and report.candidates
    assert all(c.mutants_killed >= 1 and c.lines_added >= 1 for c in report.kept)
    assert all(c.reason for c in report.candidates)
