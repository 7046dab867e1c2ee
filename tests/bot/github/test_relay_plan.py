"""The iac stage's plan in the PR comment: counts, one row per action and resource type (capped), a failed
plan's error with file and line; never a value, nor a for_each key the repository wrote."""
from __future__ import annotations

from bot.github.relay import MAX_LISTED, render_comment, view_of
from orchestra.events import Event, EventType
from orchestra.store import Run, RunStatus

SHA = "d" * 40


def _run(kind: str = "deploy", status: RunStatus = RunStatus.RUNNING) -> Run:
    return Run(kind=kind, source="github", requested_by="github:alice", repo="/srv/shop", services=["backend"],
               env="staging", commit=SHA, status=status, origin={"repo": "o/shop", "sha": SHA, "pr": 7})


def _iac(run: Run, **data: object) -> list[Event]:
    return [Event(run_id=run.id, type=EventType.STAGE_STARTED, actor="iac", data={"stage": "iac"}),
            Event(run_id=run.id, type=EventType.IAC_READY, actor="iac", data={"stage": "iac", **data})]


PLAN = {"add": ["aws_vpc.main", "aws_ecs_service.svc[\"a.b [x]\"]", "aws_ecs_service.svc[\"c\"]",
                'module.net["k"].aws_subnet.public[0]'],
        "change": ["aws_security_group.web"], "destroy": [], "replace": ["aws_lb.edge"],
        "summary": "5 to add, 1 to change, 1 to destroy"}


def test_a_planned_iac_stage_shows_its_counts_and_resource_types_in_the_comment() -> None:
    run = _run()
    body = render_comment(run, view_of(run, _iac(run, passed=True, summary="terraform 1.11.4: ...", plan=PLAN,
                                                 terraform="terraform", terraform_version="1.11.4")))
    assert "**Terraform plan**: `terraform 1.11.4`: **5 to add, 1 to change, 1 to destroy**; nothing was applied" \
        in body
    assert "| add | `aws_ecs_service` | 2 |" in body and "| add | `aws_vpc` | 1 |" in body
    assert "| add | `aws_subnet` | 1 |" in body  # inside a module, with an index
    assert "| change | `aws_security_group` | 1 |" in body and "| replace | `aws_lb` | 1 |" in body
    assert "a.b [x]" not in body and '"k"' not in body and "destroy | `" not in body


def test_a_failed_plan_shows_terraforms_error_with_file_and_line() -> None:
    error = ("terraform 1.11.4: `terraform plan` failed: Error: reading EC2 VPC: InvalidVpcID.NotFound "
             "with data.aws_vpc.shared, on infra/main.tf line 15, in data \"aws_vpc\" \"shared\": " + "x" * 400)
    run = _run(status=RunStatus.FAILED).model_copy(update={"reason": "iac failed"})
    body = render_comment(run, view_of(run, _iac(run, passed=False, summary=error, files=["infra/main.tf"])))
    assert f"**Terraform plan**: Terraform did not plan: {error}" in body  # whole, past the table's 300 characters
    assert "| action | resource type |" not in body


def test_many_resource_types_are_capped_and_the_rest_counted() -> None:
    plan = {**PLAN, "add": [f"aws_type_{i}.x" for i in range(MAX_LISTED + 7)], "change": [], "replace": []}
    run = _run()
    body = render_comment(run, view_of(run, _iac(run, passed=True, summary="ok", plan=plan)))
    assert body.count("| add | `aws_type_") == MAX_LISTED and "| … | 7 more resource types | |" in body


def test_a_skipped_stage_and_a_run_without_iac_show_no_plan() -> None:
    run = _run()
    skipped = render_comment(run, view_of(run, _iac(run, passed=True, summary="skipped: ...", skipped=True)))
    assert "Terraform plan" not in skipped and "Terraform plan" not in render_comment(run, view_of(run, []))


def test_a_plan_runs_headline_names_its_environment() -> None:
    run = _run("plan", RunStatus.SUCCEEDED)
    body = render_comment(run, view_of(run, _iac(run, passed=True, summary="ok", plan={**PLAN, "add": []})))
    assert "✅ DevOps Orchestra: Planned (for staging)" in body
