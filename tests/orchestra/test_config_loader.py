"""devops_orchestra.yaml loading: every problem as FILE:LINE: field: message, suggestions, inferred gaps."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from orchestra.config import CONFIG_FILENAME, load_config, load_file, validate_file
from orchestra.errors import ConfigError
from orchestra.settings import PROJECT_ROOT

SHOP = PROJECT_ROOT / "examples" / "shop"

MINIMAL = """\
project:
  name: shop
deployment:
  services:
    - name: api
      port: 5000
"""


def problems(tmp_path: Path, text: str) -> list[str]:
    """The problems of ``text`` with the file name cut off: ``LINE: field: message``."""
    path = tmp_path / CONFIG_FILENAME
    path.write_text(textwrap.dedent(text))
    prefix = f"{path}:"
    found = validate_file(path)
    assert all(p.startswith(prefix) for p in found), found
    return [p[len(prefix):] for p in found]


INVALID = [
    ("unknown top-level key",
     "project:\n  name: shop\ndeploymnet:\n  strategy: canary\n",
     ["3: deploymnet: unknown key (did you mean `deployment`?)"]),
    ("unknown nested key",
     MINIMAL + "  stratgy: canary\n",
     ["7: deployment.stratgy: unknown key (did you mean `strategy`?)"]),
    ("unknown service key",
     MINIMAL + "      helth: /healthz\n",
     ["7: deployment.services[0].helth: unknown key (did you mean `health`?)"]),
    ("bad strategy enum",
     MINIMAL + "  strategy: bluegreen\n",
     ["7: deployment.strategy: `bluegreen` is not allowed; use one of blue-green, canary, rolling "
      "(did you mean `blue-green`?)"]),
    ("port is not a number",
     "project:\n  name: shop\ndeployment:\n  services:\n    - name: api\n      port: http\n",
     ["6: deployment.services[0].port: must be a whole number (got `http`)"]),
    ("port out of range",
     "project:\n  name: shop\ndeployment:\n  services:\n    - name: api\n      port: 70000\n",
     ["6: deployment.services[0].port: must be at most 65535 (got `70000`)"]),
    ("not a boolean",
     MINIMAL + "environments:\n  staging:\n    approval_required: maybe\n",
     ["9: environments.staging.approval_required: must be true or false (got `maybe`)"]),
    ("not a time of day",
     MINIMAL + "environments:\n  production:\n    freeze:\n      - days: [sat]\n        from: noon\n"
               "        to: '18:00'\n",
     ["11: environments.production.freeze[0].from: must be a time of day such as 16:00 (got `noon`)"]),
    ("not a datetime",
     MINIMAL + "environments:\n  production:\n    freeze:\n      - start: christmas\n"
               "        end: 2026-12-27T00:00:00Z\n",
     ["10: environments.production.freeze[0].start: must be a date and time such as 2026-12-24T18:00:00Z "
      "(got `christmas`)"]),
    ("replicas below 1",
     MINIMAL + "      replicas: 0\n",
     ["7: deployment.services[0].replicas: must be at least 1 (got `0`)"]),
    ("bad duration",
     MINIMAL + "  canary:\n    analysis_interval: 5 minutes\n",
     ["8: deployment.canary.analysis_interval: `5 minutes` is not a duration; write e.g. 30s, 5m, 1h30m "
      "(units: ms, s, m, h, d)"]),
    ("bad percentage",
     MINIMAL + "rollback:\n  threshold:\n    error_rate: lots\n",
     ["9: rollback.threshold.error_rate: `lots` is not a percentage; write e.g. 2% or 2"]),
    ("percentage over 100",
     MINIMAL + "observability:\n  alerts:\n    - type: error_rate\n      threshold: 150%\n",
     ["10: observability.alerts[0].threshold: `150%` is out of range; a percentage is between 0% and 100%"]),
    ("alert without its threshold",
     MINIMAL + "observability:\n  alerts:\n    - type: latency\n",
     ["9: observability.alerts[0]: a `latency` alert needs `threshold_ms`"]),
    ("unknown dependency",
     MINIMAL + "      depends_on: [databse]\n    - name: databse-x\n      port: 5002\n",
     ["7: deployment.services[0].depends_on[0]: unknown service `databse` (did you mean `databse-x`?)"]),
    ("dependency cycle",
     """\
     project:
       name: shop
     deployment:
       services:
         - name: a
           port: 5000
           depends_on: [b]
         - name: b
           port: 5001
           depends_on: [a]
     """,
     ["7: deployment.services[0].depends_on: dependency cycle: a -> b -> a"]),
    ("duplicate service and port",
     MINIMAL + "    - name: api\n      port: 5000\n",
     ["7: deployment.services[1].name: service `api` is already defined (services.0)"]),
    ("two services on one port",
     MINIMAL + "    - name: web\n      port: 5000\n",
     ["8: deployment.services[1].port: port 5000 is already used by service `api`; give each service "
      "its own port"]),
    ("unknown environment",
     MINIMAL + "environments:\n  prd:\n    approval_required: true\n",
     ["8: environments.prd: unknown environment (did you mean `production`?); environments are production, "
      "staging, development (or prod, stg, dev)"]),
    ("alias and canonical name together",
     MINIMAL + "environments:\n  prod: {}\n  production: {}\n",
     ["7: environments: `prod` and `production` name the same environment; keep one"]),
    ("bad value under an alias key",
     MINIMAL + "environments:\n  prod:\n    approval_timeout: soon\n",
     ["9: environments.production.approval_timeout: `soon` is not a duration; write e.g. 30s, 5m, 1h30m "
      "(units: ms, s, m, h, d)"]),
    ("freeze window half given",
     MINIMAL + "environments:\n  production:\n    freeze:\n      - days: [fri]\n",
     ["10: environments.production.freeze[0]: a weekly freeze window needs `days`, `from` and `to` "
      "(e.g. days: [fri], from: '16:00', to: '23:59')"]),
    ("freeze window ends before it starts",
     MINIMAL + "environments:\n  production:\n    freeze:\n      - start: 2026-12-24T00:00:00Z\n"
               "        end: 2026-12-20T00:00:00Z\n",
     ["10: environments.production.freeze[0]: a freeze window needs both `start` and `end`, with `end` "
      "after `start`"]),
    ("section of the wrong type",
     MINIMAL + "build: docker\n",
     ["7: build: must be a mapping of keys (got `docker`)"]),
    ("list expected",
     MINIMAL + "secrets:\n  keys: DB_PASSWORD\n",
     ["8: secrets.keys: must be a list (got `DB_PASSWORD`)"]),
    ("channel without #",
     MINIMAL + "chatops:\n  channel: devops\n",
     ["8: chatops.channel: `devops` is not a Slack channel; write it as \"#name\" (quoted) or a channel id"]),
    ("empty services",
     "project:\n  name: shop\ndeployment:\n  services: []\n",
     ["4: deployment.services: must not be empty"]),
    ("missing service name",
     "project:\n  name: shop\ndeployment:\n  services:\n    - port: 5000\n",
     ["5: deployment.services[0].name: is required"]),
    ("duplicate yaml key",
     MINIMAL + "chatops:\n  channel: '#a'\n  channel: '#b'\n",
     ["9: chatops.channel: duplicate key `channel` (first given on line 8)"]),
    ("yaml syntax error",
     "project:\n  name: shop\n deployment: [\n",
     ["3: yaml: did not find expected key (while parsing a block mapping)"]),
    ("top level is a list",
     "- project\n",
     ["1: (top level): must be a mapping of sections such as project, deployment, environments"]),
]


@pytest.mark.parametrize("text, expected", [(t, e) for _, t, e in INVALID], ids=[i for i, _, _ in INVALID])
def test_invalid_files_give_one_line_per_problem(tmp_path: Path, text: str, expected: list[str]) -> None:
    assert problems(tmp_path, text) == expected


def test_every_problem_is_reported_in_line_order(tmp_path: Path) -> None:
    text = """\
    project:
      name: Shop
      langauge: python
    deployment:
      strategy: canery
      services:
        - name: api
          port: abc
          depends_on: [web]
        - name: web
          port: 5001
          depends_on: [api]
    """
    found = problems(tmp_path, text)
    assert [p.split(":")[0] for p in found] == ["2", "3", "5", "8", "9"]
    assert found[0].startswith("2: project.name: `Shop` is not a valid name")
    assert found[4] == "9: deployment.services[0].depends_on: dependency cycle: api -> web -> api"


def test_load_file_raises_config_error_with_the_problems(tmp_path: Path) -> None:
    path = tmp_path / CONFIG_FILENAME
    path.write_text(MINIMAL + "  strategy: big-bang\n")
    with pytest.raises(ConfigError) as caught:
        load_file(path)
    assert caught.value.problems == validate_file(path)
    assert "orchestra validate" in str(caught.value)


def test_yaml_12_scalars_times_stay_text_and_yes_is_not_magic(tmp_path: Path) -> None:
    path = tmp_path / CONFIG_FILENAME
    path.write_text(MINIMAL + "      env:\n        FLAG: yes\n        PORT: 5000\n"
                    "environments:\n  production:\n    freeze:\n      - days: [fri]\n        from: 16:00\n"
                    "        to: 23:30\n")
    config = load_file(path)
    assert config.service("api").env_dict() == {"FLAG": "yes", "PORT": "5000"}
    window = config.environment("production").freeze[0]
    assert (window.from_.hour, window.from_.minute, window.to.minute) == (16, 0, 30)


def test_template_aliases_errors_and_thresholds(tmp_path: Path) -> None:
    path = tmp_path / CONFIG_FILENAME
    path.write_text(MINIMAL + "rollback:\n  thresholds:\n    errors: 2%\n    cpu: 80\n    duration: 90s\n")
    threshold = load_file(path).rollback.threshold
    assert (threshold.error_rate, threshold.cpu, threshold.duration) == (2.0, 80.0, 90.0)


def test_the_example_shop_file_is_valid_and_complete() -> None:
    assert validate_file(SHOP / CONFIG_FILENAME) == []
    config = load_config(SHOP)
    assert config.source == SHOP / CONFIG_FILENAME
    assert config.service_names() == ["backend", "frontend"]
    assert config.deploy_order() == ["backend", "frontend"]
    assert config.service("frontend").env_dict() == {"BACKEND_URL": "http://127.0.0.1:5001"}
    production = config.environment("prod")
    assert production.approval_required and production.strategy == "canary"
    assert production.approvers == ["U0ALICE", "U0BOB"] and production.approval_timeout == 1800
    assert config.environment("staging").strategy == "blue-green"
    assert config.environment("dev").strategy == "rolling"
    assert config.deployment.canary.analysis_interval == 30
    assert config.rollback.threshold.error_rate == 5.0 and config.rollback.max_automatic_per_hour == 3
    assert config.service_dir("backend") == SHOP / "backend"


def test_missing_file_gives_inferred_defaults(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("from flask import Flask\napp = Flask(__name__)\napp.run(port=8080)\n")
    config = load_config(tmp_path)
    assert config.source is None
    assert config.deployment.services[0].port == 8080
    assert config.project.framework == "flask"


def test_a_partial_file_takes_the_rest_from_the_repository(tmp_path: Path) -> None:
    (tmp_path / "go.mod").write_text("module example.com/api\n")
    (tmp_path / "main.go").write_text('package main\nfunc main() { http.ListenAndServe(":9090", nil) }\n')
    (tmp_path / CONFIG_FILENAME).write_text("deployment:\n  strategy: rolling\n")
    config = load_config(tmp_path)
    assert config.project.language == "go"
    assert config.deployment.strategy == "rolling"
    assert [(s.name, s.port, s.path) for s in config.deployment.services] == [(config.project.name, 9090, ".")]
    assert config.environment("production").strategy == "rolling"


def test_an_empty_file_is_all_defaults(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILENAME).write_text("# nothing yet\n")
    config = load_config(tmp_path)
    assert config.environment("production").branches == ["main"]
    assert config.observability.alerts[1].threshold == 2.0


def test_the_yml_spelling_is_found_too(tmp_path: Path) -> None:
    (tmp_path / "devops_orchestra.yml").write_text(MINIMAL + "  strategy: canary\n")
    assert load_config(tmp_path).deployment.strategy == "canary"
