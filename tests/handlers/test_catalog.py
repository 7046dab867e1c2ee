"""Service names come from every served repository."""
from __future__ import annotations

import shutil
from pathlib import Path

from handlers.catalog import Catalog
from handlers.understand import Understander
from orchestra.settings import PROJECT_ROOT, Settings


def _repo(tmp_path: Path, name: str, services: list[str]) -> Path:
    repo = tmp_path / name
    for service in services:
        (repo / service).mkdir(parents=True)
    lines = [f"project:\n  name: {name}\ndeployment:\n  services:"]
    lines += [f"    - name: {s}\n      path: {s}\n      port: {6000 + i}" for i, s in enumerate(services)]
    (repo / "devops_orchestra.yaml").write_text("\n".join(lines) + "\n")
    return repo


def test_a_broken_repository_is_skipped(settings: Settings, tmp_path: Path) -> None:
    broken = _repo(tmp_path, "broken", ["a"])
    (broken / "devops_orchestra.yaml").write_text("deployment: [\n")
    good = _repo(tmp_path, "good", ["b"])
    assert Catalog.from_settings(settings.with_(repos=(str(broken), str(good)))).service_names() == ["b"]


def test_services_resolve_across_repositories(settings: Settings, tmp_path: Path) -> None:
    shop = tmp_path / "shop"
    shutil.copytree(PROJECT_ROOT / "examples" / "shop", shop)
    billing = _repo(tmp_path, "billing", ["payments", "invoices"])
    catalog = Catalog.from_settings(settings.with_(repos=(str(shop), str(billing), str(tmp_path / "gone"))))
    assert catalog.service_names() == ["backend", "frontend", "payments", "invoices"]
    parsed = Understander().understand("ship invoics to prod", catalog.service_names())
    assert parsed.contract()["service"] == "invoices"

