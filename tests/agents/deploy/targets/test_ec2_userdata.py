"""The EC2 release's user data run under real bash, with stand-ins for what an instance has.

``docker``, ``aws``, ``dnf``, ``systemctl`` and ``curl`` are scripts on PATH that append their argv (and, for
docker, the secret it was handed through the environment) to a file; ``aws`` and ``curl`` answer what the
instance would get (a secret's value, the ECR password, the IMDSv2 token and instance id). Hostile values
from the repository's config must reach docker as one literal argument each and run nothing.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agents.deploy.targets.base import Plan
from agents.deploy.targets.ec2.userdata import LIMIT, script
from agents.deploy.targets.ecs.resources import stream_prefix
from orchestra.errors import StageFailed

HOSTILE = {"SUBST": "$(touch pwned-subst)", "QUOTE": "'; touch pwned-quote #",
           "TICKS": "`touch pwned-ticks`", "NEWLINE": "one\ntouch pwned-newline", "DOUBLE": '"; touch pwned-dq; "',
           "GLOB": "* ~ $HOME ${PATH} !! \\", "EMPTY": ""}
STUB = """#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
if "--password-stdin" in sys.argv:  # docker login reads the password from its pipe, as the real one does
    sys.stdin.read()
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "name": name, "secret": os.environ.get("DATABASE_URL")}}) + "\\n")
if name == "curl":
    print("TOKEN" if "-X" in sys.argv else "i-0123456789abcdef0")
elif name == "aws":
    print("the-ecr-password" if "ecr" in sys.argv else "s3cr3t from secrets manager")
"""


def _run(tmp_path: Path, text: str, *, with_docker: bool = True) -> tuple[subprocess.CompletedProcess[str],
                                                                         list[dict[str, object]]]:
    stubs, cwd, log = tmp_path / "bin", tmp_path / "cwd", tmp_path / "calls.jsonl"
    stubs.mkdir()
    cwd.mkdir()
    for name in ("docker", "aws", "dnf", "systemctl", "curl"):
        if name == "docker" and not with_docker:
            continue
        (stubs / name).write_text(STUB.format(python=sys.executable))
        (stubs / name).chmod(0o755)
    (tmp_path / "userdata.sh").write_text(text)
    done = subprocess.run(["/bin/bash", str(tmp_path / "userdata.sh")], cwd=cwd, capture_output=True, text=True,
                          timeout=30, env={"PATH": str(stubs), "STUB_LOG": str(log),
                                           "HOME": str(tmp_path)})
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return done, calls


def test_hostile_values_reach_docker_as_one_literal_argument_each_and_run_nothing(tmp_path: Path) -> None:
    canary = tmp_path / "x"
    canary.mkdir()
    env = {**HOSTILE, "RM": f"'; rm -rf {canary} #"}
    version = "v1$(touch pwned-version)`touch pwned-v2`\ntouch pwned-v3 '; rm -rf " + str(canary) + " #"
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/shop-web:v1"
    plan = Plan(service="web", env="staging", image=image, version=version, run_id="r1", port_hint=8080,
                extra_env=env)
    text = script(plan, region="us-east-1", log_group="/orchestra/web",
                  secrets={"DATABASE_URL": "staging/DATABASE_URL"})
    done, calls = _run(tmp_path, text)
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.rglob("pwned*")) and canary.is_dir()  # nothing ran, nothing was removed
    assert "s3cr3t" not in text  # user data names the secret; the value is read at boot
    names = [c["name"] for c in calls]
    # the ECR login is a pipe: its two sides start together, in either order
    assert names[:3] + sorted(names[3:5]) + names[5:] == ["systemctl", "curl", "curl", "aws", "docker", "aws",
                                                          "docker", "docker"], names
    assert calls[0]["argv"] == ["enable", "--now", "docker"]
    login = sorted((c for c in calls[3:5]), key=lambda c: str(c["name"]))
    assert login[0]["argv"] == ["ecr", "get-login-password", "--region", "us-east-1"]
    assert login[1]["argv"] == ["login", "--username", "AWS", "--password-stdin",
                                "123456789012.dkr.ecr.us-east-1.amazonaws.com"]
    assert calls[5]["argv"] == ["secretsmanager", "get-secret-value", "--region", "us-east-1", "--secret-id",
                                "staging/DATABASE_URL", "--query", "SecretString", "--output", "text"]
    run = calls[7]
    argv = run["argv"]
    assert isinstance(argv, list) and argv[:8] == ["run", "-d", "--name", "web", "--restart", "unless-stopped",
                                                   "-p", "8080:8080"]
    given = [argv[i + 1] for i, a in enumerate(argv) if a == "-e"]
    expected = {**env, "PORT": "8080", "HOST": "0.0.0.0", "APP_VERSION": version, "ORCHESTRA_ENV": "staging"}
    assert given == [f"{k}={v}" for k, v in sorted(expected.items())] + ["DATABASE_URL"]
    assert run["secret"] == "s3cr3t from secrets manager"  # exported for `-e DATABASE_URL`, never on argv
    opts = [argv[i + 1] for i, a in enumerate(argv) if a == "--log-opt"]
    assert opts == ["awslogs-region=us-east-1", "awslogs-group=/orchestra/web", "awslogs-create-group=true",
                    f"awslogs-stream={stream_prefix(version)}/i-0123456789abcdef0"]
    assert stream_prefix(version).startswith("v1--touch-pwned-version--touch-pwned-v2--touch-pwned-v3----rm--rf--")
    assert argv[-1] == image and argv[argv.index("--log-driver") + 1] == "awslogs"


def test_docker_is_installed_when_the_ami_has_none_and_a_failing_step_stops_the_script(tmp_path: Path) -> None:
    plan = Plan(service="web", env="staging", image="registry.example/web:v1", version="v1", run_id="r1")
    done, calls = _run(tmp_path, script(plan, region="us-east-1", log_group="/g", secrets={}), with_docker=False)
    assert done.returncode != 0  # dnf "installed" nothing: docker is still missing, and set -e stops there
    assert [c["name"] for c in calls][:2] == ["dnf", "systemctl"] and calls[0]["argv"] == ["install", "-y", "docker"]
    assert "aws" not in [c["name"] for c in calls]  # not on ECR: no login


@pytest.mark.parametrize("field,value,part", [("extra_env", {"CERT": "x" * LIMIT}, "services[].env CERT"),
                                              ("version", "v" * LIMIT, "the version")])
def test_user_data_over_16_kb_is_refused_naming_the_big_part(field: str, value: object, part: str) -> None:
    plan = Plan(service="web", env="staging", image="registry.example/web:v1", version="v1", run_id="r1")
    setattr(plan, field, value)
    with pytest.raises(StageFailed, match=re.escape(f"over AWS's {LIMIT} (16 KB): the biggest part is {part}")):
        script(plan, region="us-east-1", log_group="/g", secrets={})


def test_a_secret_key_that_is_not_a_shell_name_is_refused() -> None:
    plan = Plan(service="web", env="staging", image="registry.example/web:v1", version="v1", run_id="r1")
    with pytest.raises(StageFailed, match="is not a variable name"):
        script(plan, region="us-east-1", log_group="/g", secrets={"X;touch y": "staging/X"})


def test_release_template_names_are_valid_launch_template_names_and_never_shared() -> None:
    from agents.deploy.targets.ec2.templates import release_name

    versions = ["v1.2.3", "v1 2", "v1:2", "$(touch x)", "'; rm -rf / #", "v" * 200, "v" * 199 + "w", "ünï/cödé"]
    names = [release_name("web", "staging", v) for v in versions]
    assert names[0] == "web-staging-v1.2.3"  # a plain version is kept as it is
    assert all(re.fullmatch(r"[a-zA-Z0-9().\-/_]{3,128}", n) for n in names), names
    assert len(set(names)) == len(names)  # "v1 2" and "v1:2" slug alike; their hashes tell them apart
