"""Configuration values reach HCL only as quoted strings: they read back as themselves, through Terraform's
own parser, and never become HCL (a block, an interpolation, a template directive, a comment)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from agents.iac import hcl
from agents.iac.generate import render
from agents.iac.generate.spec import Spec

HOSTILE = [
    'x"; evil',
    'x" }\nresource "aws_iam_user" "evil" { name = "evil" }\n#',
    "${file(\"/etc/passwd\")}",
    "%{ for x in [1] }boom%{ endfor }",
    "$${already} %%{doubled}",
    "back\\slash\\\"quote",
    "tab\tnew\nline\r\u2028 end",
    "/* comment */ // # not a comment",
    "ünïcödé ☃ \u0000 nul",
]
needs_terraform = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")


@pytest.mark.parametrize(("data", "expected"), [
    (None, "null"), (True, "true"), (False, "false"), (5001, "5001"), ("web", '"web"'), ([], "[]"), ({}, "{}"),
    (["a", 1], '["a", 1]'), ("${x}", '"$${x}"'), ("%{x}", '"%%{x}"'), ('a"b', '"a\\"b"'),
    ({"a": 1, "bcd": "x"}, '{\n  "a"   = 1\n  "bcd" = "x"\n}'),
])
def test_values_are_written_as_terraform_fmt_writes_them(data: hcl.Value, expected: str) -> None:
    assert hcl.value(data) == expected


def _evaluate(tmp_path: Path, text: str, expression: str) -> object:
    """``expression`` as Terraform reads it from a folder holding only ``text`` (no providers needed)."""
    (tmp_path / "variables.tf").write_text(text)
    fmt = subprocess.run(["terraform", "fmt", "-check", "-no-color", "."], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, check=False)
    assert fmt.returncode == 0, f"not as terraform fmt writes it: {fmt.stdout}{fmt.stderr}"
    done = subprocess.run(["terraform", "console", "-no-color"], cwd=tmp_path, input=f"jsonencode({expression})\n",
                          capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path),
                               "CHECKPOINT_DISABLE": "1"})
    assert done.returncode == 0, done.stderr
    return json.loads(json.loads(done.stdout))


@needs_terraform
def test_hostile_strings_read_back_as_themselves_through_terraform(tmp_path: Path) -> None:
    data = {text: {"name": text, "list": [text]} for text in HOSTILE}
    text = hcl.variable("hostile", "any", data, "hostile values") + hcl.variable("plain", "string", "ok", "a")
    assert _evaluate(tmp_path, text, "var.hostile") == data
    assert _evaluate(tmp_path, text, "var.plain") == "ok"  # nothing after the hostile values was swallowed


@needs_terraform
def test_a_hostile_service_in_the_generated_variables_cannot_add_hcl(tmp_path: Path) -> None:
    """The generator's whole input is data: a service named `x"; evil` (and worse) stays a map key and values."""
    evil = HOSTILE[1]
    spec = Spec(project="shop", environment="staging", region=evil, cluster_name=HOSTILE[0], secret_prefix=HOSTILE[2])
    spec.ecs_services[evil] = {"port": 80, "health": HOSTILE[3], "cpu": 256, "memory": 512, "repository": HOSTILE[5],
                               "log_group": HOSTILE[6], "target_groups": {"blue": HOSTILE[7], "green": HOSTILE[8]},
                               "path_pattern": HOSTILE[4], "priority": 0}
    spec.lambda_services[HOSTILE[0]] = {"function": HOSTILE[2], "alias": HOSTILE[3], "repository": HOSTILE[5]}
    variables = render(spec)["variables.tf"]
    assert 'resource "aws_iam_user"' not in variables.replace('\\"', "'")  # only ever inside a string
    assert _evaluate(tmp_path, variables, "var.ecs_services") == spec.ecs_services
    assert _evaluate(tmp_path, variables, "var.lambda_services") == spec.lambda_services
    assert _evaluate(tmp_path, variables, "[var.region, var.cluster_name, var.secret_prefix, var.default_service]") \
        == [evil, HOSTILE[0], HOSTILE[2], evil]
    blocks = subprocess.run(["grep", "-c", "^variable ", str(tmp_path / "variables.tf")], capture_output=True,
                            text=True, check=False).stdout.strip()
    assert blocks == "17"  # the generator's own variables, none added by a value
