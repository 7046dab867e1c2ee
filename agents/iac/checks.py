"""The checks before anything is applied: init, fmt -check, validate, plan -out, and the plan's summary.

Every failure says what is wrong and where: Terraform's diagnostics carry file and line, and a
provider or plan error keeps Terraform's own words. Only resource addresses and their actions leave
this module (the plan's values, which may hold state and secrets, stay in the plan file).
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.iac.terraform import Terraform
from orchestra.errors import StageFailed

PLAN_FILE = "orchestra.tfplan"
MAX_DIAGNOSTICS = 5
_ON_FILE = re.compile(r"\bon (\S+\.tf) line")  # Terraform's "on main.tf line 15", relative to its folder
ACTION = {("create",): "add", ("update",): "change", ("delete",): "destroy",
          ("delete", "create"): "replace", ("create", "delete"): "replace"}


@dataclass
class PlanSummary:
    """What ``plan`` would do, by resource address."""

    add: list[str] = field(default_factory=list)
    change: list[str] = field(default_factory=list)
    destroy: list[str] = field(default_factory=list)
    replace: list[str] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return bool(self.add or self.change or self.destroy or self.replace)

    def line(self) -> str:
        """``38 to add, 0 to change, 0 to destroy`` (a replacement counts as one add and one destroy)."""
        return (f"{len(self.add) + len(self.replace)} to add, {len(self.change)} to change, "
                f"{len(self.destroy) + len(self.replace)} to destroy")

    def by_type(self) -> str:
        """``add: aws_ecs_service ×4, aws_vpc ×1; destroy: ...`` for the thread."""
        parts = []
        for action in ("add", "change", "replace", "destroy"):
            counts = Counter(address.split("[", 1)[0].rsplit(".", 1)[0] for address in getattr(self, action))
            if counts:
                parts.append(f"{action}: " + ", ".join(f"{t} ×{n}" for t, n in sorted(counts.items())))
        return "; ".join(parts) or "no changes"

    def data(self) -> dict[str, Any]:
        return {"add": self.add, "change": self.change, "destroy": self.destroy, "replace": self.replace,
                "summary": self.line()}


def init(tf: Terraform, *, state: Path | None) -> None:
    """``terraform init``: providers from the configured source, the local state at ``state`` (if given)."""
    args = ["init", "-input=false", "-no-color"]
    if state is not None:
        state.parent.mkdir(parents=True, exist_ok=True)
        args.append(f"-backend-config=path={state}")
    done = tf.run(*args, exclusive=True)
    if done.returncode != 0:
        raise StageFailed(f"`{tf.name} init` failed: {last_error(done.stderr or done.stdout)}",
                          hint=f"providers come from {tf.providers}; scripts/terraform-mirror lays out a mirror "
                               "of the AWS provider (ORCHESTRA_TERRAFORM_MIRROR) for machines without the registry")


def fmt_check(tf: Terraform, shown: str) -> None:
    """``terraform fmt -check``: the files not formatted are named (``shown`` is the folder as users know it)."""
    done = tf.run("fmt", "-check", "-recursive", "-list=true", "-no-color", timeout=60)
    if done.returncode == 0:
        return
    unformatted = [f"{shown.rstrip('/')}/{line.strip()}" for line in done.stdout.splitlines() if line.strip()]
    if not unformatted:
        raise StageFailed(f"`{tf.name} fmt -check` could not read the files: {last_error(done.stderr)}",
                          hint="fix the syntax error it names")
    raise StageFailed(f"not formatted: {', '.join(unformatted)}", hint="run `terraform fmt` and commit")


def validate(tf: Terraform, shown: str) -> None:
    """``terraform validate``: each error with file, line and Terraform's explanation."""
    done = tf.run("validate", "-json", "-no-color")
    try:
        report = json.loads(done.stdout)
    except ValueError as exc:
        raise StageFailed(f"`{tf.name} validate` failed: {last_error(done.stderr)}") from exc
    errors = [d for d in report.get("diagnostics") or [] if d.get("severity") == "error"]
    if report.get("valid") and not errors:
        return
    raise StageFailed(f"`{tf.name} validate` found {len(errors)} error(s): "
                      + "; ".join(_diagnostic(d, shown) for d in errors[:MAX_DIAGNOSTICS]),
                      hint="fix them in the files named; nothing was planned or changed")


def plan(tf: Terraform, shown: str) -> PlanSummary:
    """``terraform plan -out``, then the saved plan's actions by resource (from ``show -json``)."""
    done = tf.run("plan", "-input=false", "-no-color", "-lock-timeout=60s", "-detailed-exitcode",
                  f"-out={PLAN_FILE}")
    if done.returncode not in (0, 2):
        error = _ON_FILE.sub(lambda m: f"on {shown.rstrip('/')}/{m.group(1)} line",
                             last_error(done.stderr or done.stdout))
        hint = ("put the value into that SSM parameter as a SecureString (`aws ssm put-parameter --type "
                "SecureString --name NAME --value ...`: the generated database's password is read from it), then "
                "plan again; nothing was changed" if "ParameterNotFound" in error else
                "check the AWS credentials, region and endpoint the worker has; nothing was changed")
        raise StageFailed(f"`{tf.name} plan` failed: {error}", hint=hint)
    saved = tf.run("show", "-json", "-no-color", PLAN_FILE)
    if saved.returncode != 0:
        raise StageFailed(f"`{tf.name} show` could not read the plan: {last_error(saved.stderr)}")
    return summarize(json.loads(saved.stdout))


def summarize(plan_json: dict[str, Any]) -> PlanSummary:
    """Addresses by action from ``terraform show -json``'s ``resource_changes`` (reads no values)."""
    summary = PlanSummary()
    for change in plan_json.get("resource_changes") or []:
        if change.get("mode") == "data":
            continue
        action = ACTION.get(tuple(change["change"]["actions"]))
        if action is not None:
            getattr(summary, action).append(str(change["address"]))
    return summary


def _diagnostic(diag: dict[str, Any], shown: str) -> str:
    where = diag.get("range") or {}
    place = f"{shown.rstrip('/')}/{where['filename']}:{where['start']['line']}: " if where.get("filename") else ""
    detail = " ".join(str(diag.get("detail") or "").split())
    return f"{place}{diag.get('summary', 'error')}" + (f" ({detail[:300]})" if detail else "")


def last_error(text: str) -> str:
    """Terraform's own error, without its box drawing: the ``Error:`` paragraph, else the last line."""
    lines = [line.strip(" │╷╵") for line in text.splitlines()]
    lines = [line for line in lines if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("Error:"):
            return " ".join(lines[i:i + 4])[:600]
    return (lines or ["no output"])[-1][:600]


_last_error = last_error  # the name drift.py reads
