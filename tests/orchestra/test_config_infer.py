"""Inferring a configuration from what a repository looks like."""
from __future__ import annotations

import json
from pathlib import Path

from orchestra.config import infer_config
from orchestra.settings import PROJECT_ROOT
from tests.support.files import write_files

SHOP = PROJECT_ROOT / "examples" / "shop"


def test_the_shop_is_two_flask_services_with_their_ports() -> None:
    config = infer_config(SHOP)
    assert (config.project.name, config.project.language, config.project.framework) == ("shop", "python", "flask")
    assert [(s.name, s.path, s.port) for s in config.deployment.services] == [
        ("frontend", "frontend", 5000), ("backend", "backend", 5001)]
    assert config.service("frontend").depends_on == ["backend"]
    assert config.deploy_order() == ["backend", "frontend"]
    assert config.testing.enabled and config.testing.command == "python -m pytest -q"


def test_python_root_repository_is_one_service_named_after_the_folder(tmp_path: Path) -> None:
    repo = write_files(tmp_path / "My_Api", {
        "requirements.txt": "fastapi==0.115\nuvicorn\n",
        "main.py": "import os\nPORT = int(os.environ.get('PORT', 8000))\n",
        "tests/test_main.py": "def test_ok():\n    assert True\n",
    })
    config = infer_config(repo)
    assert config.project.name == "my-api" and config.project.framework == "fastapi"
    assert [(s.name, s.path, s.port) for s in config.deployment.services] == [("my-api", ".", 8000)]
    assert config.testing.command == "python -m pytest -q"


def test_django_without_tests_disables_testing(tmp_path: Path) -> None:
    repo = write_files(tmp_path / "site",
                       {"manage.py": "from django.core.management import execute_from_command_line\n"})
    config = infer_config(repo)
    assert (config.project.language, config.project.framework) == ("python", "django")
    assert not config.testing.enabled and config.testing.command is None
    assert config.deployment.services[0].port == 5000


def test_node_express_repository(tmp_path: Path) -> None:
    repo = write_files(tmp_path / "web", {
        "package.json": json.dumps({"dependencies": {"express": "^4"}, "devDependencies": {"jest": "^29"},
                                    "scripts": {"test": "jest"}}),
        "server.js": "const port = process.env.PORT || 3000;\napp.listen(port);\n",
    })
    config = infer_config(repo)
    assert (config.project.language, config.project.framework) == ("node", "express")
    assert (config.testing.framework, config.testing.command) == ("jest", "npm test")
    assert config.deployment.services[0].port == 3000


def test_node_next_frontend_and_go_backend(tmp_path: Path) -> None:
    repo = write_files(tmp_path / "app", {
        "frontend/package.json": json.dumps({"dependencies": {"next": "14", "react": "18"}}),
        "backend/go.mod": "module example.com/api\n",
        "backend/main.go": 'package main\n\nfunc main() { http.ListenAndServe(":8081", nil) }\n',
        "backend/main_test.go": "package main\n",
    })
    config = infer_config(repo)
    assert config.project.language == "go"
    assert {s.name: s.port for s in config.deployment.services} == {"frontend": 5000, "backend": 8081}
    assert config.testing.command == "go test ./..."


def test_java_maven_and_gradle(tmp_path: Path) -> None:
    maven = write_files(tmp_path / "svc", {"pom.xml": "<project/>",
                                           "src/main/resources/application.properties": "server.port=8088\n"})
    config = infer_config(maven)
    assert config.project.language == "java" and config.testing.command == "mvn -q test"
    assert config.deployment.services[0].port == 8088
    gradle = write_files(tmp_path / "g", {"build.gradle": "plugins { id 'java' }\n"})
    assert infer_config(gradle).testing.command == "gradle test"


def test_empty_repository_still_gives_a_valid_configuration(tmp_path: Path) -> None:
    config = infer_config(tmp_path)
    assert config.project.language == "other"
    assert len(config.deployment.services) == 1 and config.environment("production").approval_required


def test_a_dockerfile_in_a_service_is_used(tmp_path: Path) -> None:
    repo = write_files(tmp_path / "r", {"backend/Dockerfile": "FROM scratch\n", "backend/app.py": "PORT = 7000\n"})
    service = infer_config(repo).service("backend")
    assert service.dockerfile == "Dockerfile" and service.path == "backend" and service.port == 7000
