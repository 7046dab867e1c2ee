"""The iac_apply stage with the real terraform on Terraform's built-in ``terraform_data`` resource (no provider,
no network): exactly the approved plan is applied, its outputs shown but never a sensitive one, and every way
around the approval (none, a moved branch, a swapped plan file, the requester's own click) applies nothing."""
from __future__ import annotations

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from redis import Redis

from agents.context import AgentContext
from agents.deploy.targets.registry import Targets
from agents.iac import apply, backend, checks
from agents.iac import stage as iac
from jobs import approvals
from jobs.tasks import approval_of
from orchestra.config import load_config
from orchestra.errors import StageFailed
from orchestra.events import EventBus
from orchestra.locks import Locks
from orchestra.repos import checkout, head_commit
from orchestra.settings import Settings
from orchestra.store import Run, RunStore
from tests.support.services import wait_for

pytestmark = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")

CONFIG = """\
project: {name: shop}
deployment:
  services:
    - {name: web, path: web, port: 8000, runtime: docker}
infrastructure: {tool: terraform, path: infra}
environments:
  staging: {approval_required: false}
"""
MAIN_TF = """\
resource "terraform_data" "web" {
  input = "web-v1"
}

output "web" {
  value = terraform_data.web.output
}

output "db_password" {
  value     = "s3cret-${terraform_data.web.id}"
  sensitive = true
}
"""


BACKEND_TF = 'terraform {\n  backend "local" {\n    path = "STATE"\n  }\n}\n'  # one state for the workspace


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", message)
    return head_commit(repo)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "shop"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    backend = BACKEND_TF.replace("STATE", str(tmp_path / "state" / "shop.tfstate"))
    commit(repo, {"devops_orchestra.yaml": CONFIG, "web/app.py": "", "infra/main.tf": MAIN_TF,
                  "infra/backend.tf": backend}, "the shop")
    return repo


def planned(repo: Path, settings: Settings, redis: Redis, main_tf: str | None = None) -> AgentContext:
    """A recorded run of main's head, checked out as a worker does, and its iac stage's plan (of ``main_tf`` in
    place of the checked-out infra/main.tf, if given)."""
    run = RunStore(redis).create(Run(requested_by="U0ALICE", repo=str(repo), ref="main", env="staging",
                                     commit=head_commit(repo), stage="iac"))
    src = settings.run_dir(run.id) / "src" / "shop"
    checkout(run.repo, src, run.commit)
    if main_tf is not None:
        (src / "infra" / "main.tf").write_text(main_tf)
    ctx = AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=src,
                       config=load_config(src), actor="iac")
    result = iac.run(ctx)
    assert result.passed and "1 to add" in result.summary, result.summary
    ctx.run = RunStore(redis).get(run.id)
    return ctx


def approve(ctx: AgentContext, settings: Settings, user: str = "U0BOB") -> approvals.Decision:
    """The approval as the router asks for it before iac_apply, and a click on it."""
    env_policy = approvals.environment_policy(ctx.run, settings)
    approvals.request(ctx.redis, ctx.run, apply.STAGE, env_policy, timeout_s=600, message=apply.approval_text(ctx.run))
    return approvals.decide(ctx.run.id, user=user, approve=True, redis=ctx.redis, settings=settings)


def state_file(ctx: AgentContext) -> Path:
    return Path(ctx.run.repo).parent / "state" / "shop.tfstate"  # where backend.tf keeps it


def state(ctx: AgentContext) -> list[str]:
    """The resources in the workspace's state."""
    path = state_file(ctx)
    return [r["type"] + "." + r["name"] for r in json.loads(path.read_text())["resources"]] if path.exists() else []


def test_the_approved_plan_is_applied_and_only_its_non_sensitive_outputs_are_shown(
        repo: Path, settings: Settings, redis: Redis) -> None:
    ctx = planned(repo, settings, redis)
    plan = ctx.run.iac_plan or {}
    assert plan["sha256"] == apply.digest(ctx.workspace / "infra" / checks.PLAN_FILE)
    assert plan["changes"] and plan["commit"] == ctx.run.commit and plan["workspace"] == "shop/staging"
    text = apply.approval_text(ctx.run)
    assert "1 to add, 0 to change, 0 to destroy (add: terraform_data ×1)" in text and plan["sha256"][:12] in text
    assert "migrate and deploy" in text and "one approval covers the whole run" in text
    assert not approve(ctx, settings, user="U0ALICE").accepted  # the requester approving her own apply
    assert state(ctx) == []
    assert approve(ctx, settings).accepted

    result = apply.run(ctx, approval=approval_of(redis, ctx.run.id))
    assert result.passed, result.summary
    assert state(ctx) == ["terraform_data.web"]
    assert result.data["outputs"] == {"web": "web-v1"} and result.data["sensitive_outputs"] == ["db_password"]
    assert "outputs: web; sensitive, not shown: db_password" in result.summary
    assert RunStore(redis).get(ctx.run.id).iac_outputs == {"web": "web-v1"}
    secret = json.loads(state_file(ctx).read_text())["outputs"]["db_password"]["value"]
    assert secret.startswith("s3cret-")
    everything = json.dumps([e.model_dump(mode="json") for e in ctx.bus.replay(ctx.run.id)]) + json.dumps(result.data)
    assert secret not in everything and "s3cret" not in everything


def test_no_approval_or_a_rejection_applies_nothing(repo: Path, settings: Settings, redis: Redis) -> None:
    ctx = planned(repo, settings, redis)
    result = apply.run(ctx, approval=approval_of(redis, ctx.run.id))
    assert not result.passed and "no approver has approved this plan" in result.summary
    approvals.request(redis, ctx.run, apply.STAGE, approvals.environment_policy(ctx.run, settings), timeout_s=600)
    assert approvals.decide(ctx.run.id, user="U0BOB", approve=False, redis=redis, settings=settings).accepted
    result = apply.run(ctx, approval=approval_of(redis, ctx.run.id))
    assert not result.passed and "nothing was applied" in result.summary and state(ctx) == []


def test_the_branch_moving_after_the_approval_is_refused(repo: Path, settings: Settings, redis: Redis) -> None:
    ctx = planned(repo, settings, redis)
    assert approve(ctx, settings).accepted
    moved = commit(repo, {"infra/main.tf": MAIN_TF.replace("web-v1", "web-v2")}, "another change")
    result = apply.run(ctx, approval=approval_of(redis, ctx.run.id))
    assert not result.passed and state(ctx) == []
    assert f"main moved to {moved[:7]} after the approval for {ctx.run.commit[:7]}" in (result.summary or "")
    assert "nothing was applied" in result.summary


def test_a_plan_file_swapped_or_edited_after_the_approval_is_refused(
        repo: Path, settings: Settings, redis: Redis) -> None:
    ctx = planned(repo, settings, redis)
    assert approve(ctx, settings).accepted
    approved = ctx.workspace / "infra" / checks.PLAN_FILE
    # a valid plan of other code, made after the approval (a plan of the same code made within the same
    # second can be the same bytes: that one would be the approved plan itself)
    other = planned(repo, settings, redis, MAIN_TF.replace('"web-v1"', '"web-v2"'))
    assert apply.digest(other.workspace / "infra" / checks.PLAN_FILE) != apply.digest(approved)
    shutil.copy(other.workspace / "infra" / checks.PLAN_FILE, approved)
    result = apply.run(ctx, approval=approval_of(redis, ctx.run.id))
    assert not result.passed and "the plan file changed after it was made and shown to the approvers" in result.summary
    assert state(ctx) == []
    approved.write_bytes(b"")  # emptied
    assert "changed after it was made" in apply.run(ctx, approval=approval_of(redis, ctx.run.id)).summary
    approved.unlink()
    assert "is gone" in apply.run(ctx, approval=approval_of(redis, ctx.run.id)).summary
    assert state(ctx) == []


ECS_CONFIG = CONFIG.replace("  staging: {approval_required: false}\n", """\
  staging:
    approval_required: false
    ecs:
      cluster: hand-made
      region: us-east-1
      listener: arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/old/1/2
      subnets: [subnet-old]
      execution_role: arn:aws:iam::123456789012:role/old
      cpu: 512
      memory: 1024
""")
ECS_OUTPUTS_TF = """\
resource "terraform_data" "cluster" {
  input = "shop-staging"
}

output "ecs_cluster" {
  value = terraform_data.cluster.output
}

output "ecs_listener" {
  value = "LISTENER"
}

output "ecs_subnets" {
  value = ["subnet-a", "subnet-b"]
}

output "ecs_execution_role" {
  value = "arn:aws:iam::123456789012:role/shop-staging-ecs-execution"
}
"""
LISTENER = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/shop-staging/3/4"


def test_the_ecs_target_uses_what_the_apply_made_over_what_its_settings_name(
        repo: Path, settings: Settings, redis: Redis) -> None:
    commit(repo, {"devops_orchestra.yaml": ECS_CONFIG, "infra/main.tf": ECS_OUTPUTS_TF.replace("LISTENER", LISTENER)},
           "the platform in Terraform")
    ctx = planned(repo, settings, redis)
    assert Targets(settings, redis, ctx.config, "staging")._make("ecs").settings.cluster == "hand-made"  # not yet
    assert approve(ctx, settings).accepted
    assert apply.run(ctx, approval=approval_of(redis, ctx.run.id)).passed
    ecs = Targets(settings, redis, ctx.config, "staging")._make("ecs").settings
    assert (ecs.cluster, ecs.listener, ecs.subnets) == ("shop-staging", LISTENER, ["subnet-a", "subnet-b"])
    assert ecs.execution_role == "arn:aws:iam::123456789012:role/shop-staging-ecs-execution"
    assert (ecs.cpu, ecs.memory) == (512, 1024)  # what the outputs do not say stays as configured


def test_outputs_that_make_no_valid_ecs_settings_are_refused_saying_which(
        repo: Path, settings: Settings, redis: Redis) -> None:
    commit(repo, {"devops_orchestra.yaml": ECS_CONFIG,
                  "infra/main.tf": ECS_OUTPUTS_TF.replace("LISTENER", "http://shop.example")}, "a wrong output")
    ctx = planned(repo, settings, redis)
    assert approve(ctx, settings).accepted
    assert apply.run(ctx, approval=approval_of(redis, ctx.run.id)).passed
    with pytest.raises(StageFailed, match="the ECS settings staging's Terraform outputs make are not valid: listener"):
        Targets(settings, redis, ctx.config, "staging")._make("ecs")


def test_two_approved_applies_of_one_workspace_take_turns_and_the_later_stale_plan_is_refused(
        repo: Path, settings: Settings, redis: Redis, tmp_path: Path) -> None:
    slow = MAIN_TF.replace('  input = "web-v1"\n', '  input = "web-v1"\n\n  provisioner "local-exec" {\n'
                                                      '    command = "sleep 2"\n  }\n')
    commit(repo, {"infra/main.tf": slow}, "a slower apply")
    first, second = planned(repo, settings, redis), planned(repo, settings, redis)  # both: 1 to add
    for ctx in (first, second):
        assert approve(ctx, settings).accepted
    with ThreadPoolExecutor(2) as pool:
        one = pool.submit(apply.run, first, approval=approval_of(redis, first.run.id))
        wait_for(lambda: Locks(redis).holder(apply.LOCK_NAME.format(project="shop"), "staging") is not None,
                 timeout=10, interval=0.05, what="the first apply to take the workspace's lock")
        two = pool.submit(apply.run, second, approval=approval_of(redis, second.run.id), lock_wait_s=60)
        results = one.result(), two.result()
    assert results[0].passed, results[0].summary
    said = [e.data.get("message", "") for e in second.bus.replay(second.run.id)]
    assert f"waiting for run {first.run.id} of U0ALICE to finish applying shop/staging" in " ".join(said)
    assert not results[1].passed and "Saved plan is stale" in results[1].summary  # Terraform's own refusal
    assert results[1].summary.startswith("nothing was applied: the state changed after this plan was made")
    assert results[1].data["lock_token"] > results[0].data["lock_token"]
    state = json.loads((tmp_path / "state" / "shop.tfstate").read_text())
    assert [(r["name"], len(r["instances"])) for r in state["resources"]] == [("web", 1)]  # applied once


def test_files_leaving_the_backend_to_us_keep_the_workdirs_state_across_runs(
        repo: Path, settings: Settings, redis: Redis) -> None:
    """An empty `backend "local" {}` (the generated provider.tf's, so the offered files once committed): the state
    is the environment's under the workdir, the one the generated files had, never the run's checkout."""
    commit(repo, {"infra/backend.tf": 'terraform {\n  backend "local" {}\n}\n'}, "the backend left to the bot")
    ctx = planned(repo, settings, redis)
    assert approve(ctx, settings).accepted
    result = apply.run(ctx, approval=approval_of(redis, ctx.run.id))
    assert result.passed, result.summary
    kept = backend.local_state(settings.workdir, "shop", "staging")
    assert [r["name"] for r in json.loads(kept.read_text())["resources"]] == ["web"]
    assert not list(ctx.workspace.rglob("terraform.tfstate"))  # nothing in the checkout
    again = RunStore(redis).create(Run(requested_by="U0ALICE", repo=str(repo), ref="main", env="staging",
                                       commit=head_commit(repo), stage="iac"))
    src = settings.run_dir(again.id) / "src" / "shop"
    checkout(again.repo, src, again.commit)
    second = iac.run(AgentContext(run=again, settings=settings, redis=redis, bus=EventBus(redis), workspace=src,
                                  config=load_config(src), actor="iac"))
    assert second.passed and "plan: 0 to add, 0 to change, 0 to destroy" in second.summary, second.summary
    assert second.data["state"] == "state: local (staging/terraform.tfstate in the workdir)"


def test_terraform_that_would_keep_its_state_in_the_runs_checkout_is_not_applied(
        repo: Path, settings: Settings, redis: Redis) -> None:
    git(repo, "rm", "-q", "infra/backend.tf")
    commit(repo, {}, "no backend")
    ctx = planned(repo, settings, redis)
    assert approve(ctx, settings).accepted
    result = apply.run(ctx, approval=approval_of(redis, ctx.run.id))
    assert not result.passed and "keeps its state in the run's own folder" in result.summary
    assert "declare a backend" in result.summary
    assert not (ctx.workspace / "infra" / "terraform.tfstate").exists()  # nothing was applied
