"""The iac_apply stage: exactly the saved plan the approvers saw, applied one workspace at a time.

The iac stage records the saved plan on the run (:func:`record_plan`: its folder, its sha256, the summary
by resource). A plan that changes something always parks the run for the environment's approvers (the
router, with :func:`approval_text`); one with no changes never reaches this stage. Here, before anything
is applied, the stage refuses (and applies nothing) when

* the approval record is not an approval of this stage, or is for another commit than the run's;
* the checkout is not at the approved commit, or the branch it came from has moved on since;
* the plan file is gone or its sha256 is not the one recorded when it was made and shown.

Then it takes the workspace's apply lock (project and environment; the deploy locks' semantics: an atomic
take with a fencing token, renewed while this worker lives, released only by its owner), applies the
approved bytes of the plan file (``terraform apply <planfile>``, never a fresh plan) and reads the
non-sensitive outputs (:mod:`agents.iac.outputs`) into the result and onto the run.
"""
from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis import Redis

from agents.context import AgentContext, StageResult
from agents.iac import checks, outputs
from agents.iac.terraform import Terraform, prepare
from orchestra.errors import LockHeld, NotFound, StageFailed
from orchestra.lock_scripts import RENEW
from orchestra.locks import Lock, Locks
from orchestra.repos import short_sha
from orchestra.store import Run, RunStore

logger = logging.getLogger(__name__)

STAGE = "iac_apply"
LOCK_NAME = "terraform/{project}"  # in the deploy locks' key space; a slash is in no service's name
LOCK_TTL_S = 15.0  # renewed every third of it while the apply runs: a killed worker's lock is free this soon
LOCK_WAIT_S = 300.0  # a second apply of the workspace waits this long for the first, then is refused
LOCK_POLL_S = 0.5
APPLY_TIMEOUT_S = 1500  # within the stage job's own limit (jobs/graph.py)


@dataclass(frozen=True)
class Approval:
    """The run's approval record as the jobs layer read it (:mod:`jobs.approvals`)."""

    stage: str
    decision: str | None
    decided_by: str | None
    commit: str | None


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record_plan(ctx: AgentContext, tf: Terraform, summary: checks.PlanSummary) -> dict[str, Any]:
    """Keep where the saved plan is, its sha256 and its summary on the run: the approval shows them and
    the iac_apply stage applies only that file."""
    plan = {"folder": str(tf.folder), "data_dir": tf.env.get("TF_DATA_DIR"), "file": checks.PLAN_FILE,
            "sha256": digest(tf.folder / checks.PLAN_FILE), "changes": summary.changes,
            "summary": summary.line(), "by_type": summary.by_type(), "commit": ctx.run.commit,
            "workspace": f"{ctx.config.project.name}/{ctx.run.env}"}
    try:
        RunStore(ctx.redis).update(ctx.run.id, iac_plan=plan)
    except NotFound:  # a plan made outside a recorded run (a check, a tool): there is nothing to apply it for
        logger.info("run %s has no record: its plan is not kept for an apply", ctx.run.id)
    return plan


def has_changes(run: Run) -> bool:
    """Whether the run's saved plan changes something (the iac_apply stage applies to the run only then)."""
    return bool(run.iac_plan and run.iac_plan.get("changes"))


def approval_text(run: Run) -> str:
    """What the approvers read: the plan by resource, its digest, and that the approval covers the run."""
    plan = run.iac_plan or {}
    at = f" at {short_sha(run.commit)}" if run.commit else ""
    return (f"Terraform plan for {plan.get('workspace')}{at}: {plan.get('summary')} ({plan.get('by_type')}). "
            f"Approving applies exactly this saved plan (sha256 {str(plan.get('sha256'))[:12]}) and lets the rest "
            "of this run go on (its migrate and deploy stages): one approval covers the whole run.")


def run(ctx: AgentContext, *, approval: Approval | None,
        branch_tip: Callable[[Run], str | None] | None = None, lock_wait_s: float = LOCK_WAIT_S) -> StageResult:
    """Apply the run's approved plan; a refusal fails the stage with its reason and changes nothing."""
    plan = ctx.run.iac_plan
    refused = refusal(ctx, plan, approval, branch_tip or _branch_tip)
    if refused is not None or plan is None:
        return StageResult(False, f"nothing was applied: {refused}", {"applied": False})
    try:  # these bytes are checked, copied aside and applied: no swap after the check
        body = (Path(plan["folder"]) / plan["file"]).read_bytes()
    except OSError as exc:
        return StageResult(False, f"nothing was applied: the approved plan file cannot be read ({exc})",
                           {"applied": False})
    if hashlib.sha256(body).hexdigest() != plan["sha256"]:
        return StageResult(False, f"nothing was applied: {_swapped(plan, hashlib.sha256(body).hexdigest())}",
                           {"applied": False})
    project, env = plan["workspace"].split("/", 1)
    name = LOCK_NAME.format(project=project)
    data: dict[str, Any] = {"workspace": plan["workspace"], "plan_sha256": plan["sha256"]}
    try:
        with workspace_lock(ctx.redis, name, env, run_id=ctx.run.id, owner=ctx.run.requested_by,
                            wait_s=lock_wait_s, waiting=lambda held: ctx.progress(_waiting(plan, held))) as lock:
            data["lock_token"] = lock.token
            tf = prepare(ctx.settings, Path(plan["folder"]), ctx.settings.run_dir(ctx.run.id) / "infrastructure",
                         data_dir=Path(plan["data_dir"]) if plan.get("data_dir") else None)
            tf.deadline = time.monotonic() + APPLY_TIMEOUT_S + 120  # the apply and the outputs, not the checks' budget
            ctx.progress(f"applying the approved plan for {plan['workspace']} ({plan['summary']}) with "
                         f"{tf.name} {tf.version}")
            started = time.monotonic()
            _apply(tf, body, fence=lambda: _check_fence(ctx.redis, name, env, lock))
            data["apply_s"] = round(time.monotonic() - started, 1)
            found = outputs.read(tf)
    except StageFailed as exc:
        return StageResult(False, str(exc), {**data, "applied": False})
    RunStore(ctx.redis).update(ctx.run.id, iac_outputs=found.values)
    outputs.remember(ctx.redis, project, env, found.values)  # the ECS target reads them (outputs.ecs_settings)
    data.update(applied=True, outputs=found.values, sensitive_outputs=found.sensitive)
    return StageResult(True, f"applied the approved plan for {plan['workspace']}: {plan['summary']} in "
                             f"{data['apply_s']}s; {found.line()}", data)


def refusal(ctx: AgentContext, plan: dict[str, Any] | None, approval: Approval | None,
            branch_tip: Callable[[Run], str | None]) -> str | None:
    """Why the plan may not be applied now; None when the approval, the commit and the plan all agree."""
    run = ctx.run
    if plan is None:
        return "the run holds no saved plan (the iac stage records it); run the deploy again"
    if approval is None or approval.stage != STAGE or approval.decision != "approved" or not approval.decided_by:
        return "no approver has approved this plan; an infrastructure change is applied only after an approval"
    if approval.commit != run.commit or plan.get("commit") != approval.commit:
        return (f"the approval is for commit {_short(approval.commit)}, but the run is at {_short(run.commit)} and "
                f"its plan was made at {_short(plan.get('commit'))}; ask for a new deploy")
    if run.commit and (ctx.workspace / ".git").exists():
        checked_out = _git(ctx.workspace, "rev-parse", "HEAD")
        if checked_out != run.commit:
            return f"the checkout is at {_short(checked_out)}, not the approved {_short(run.commit)}"
        tip = branch_tip(run)
        if tip is not None and tip != run.commit:
            return (f"{run.ref or 'the default branch'} moved to {_short(tip)} after the approval for "
                    f"{_short(run.commit)}; its plan is not the one approved: ask for a new deploy of "
                    f"{_short(tip)}, which is planned and approved on its own")
    kept = _state_in_run(plan, ctx.settings.run_dir(run.id))
    if kept is not None:
        return (f"this Terraform keeps its state in the run's own folder ({kept}: it declares no backend), where "
                "it would be lost after the run and the next deploy would make everything again; declare a "
                "backend (`backend \"s3\" {}` with infrastructure.backend.s3, or a local path outside the "
                "checkout)")
    path = Path(plan["folder"]) / plan["file"]
    if not path.is_file():
        return f"the approved plan file {path} is gone; ask for a new deploy"
    now = digest(path)
    return _swapped(plan, now) if now != plan.get("sha256") else None


def _state_in_run(plan: dict[str, Any], run_dir: Path) -> Path | None:
    """Where a local backend would write the state, when that is inside the run's folder (the checkout, or the
    generated files beside it): Terraform with no backend, or a relative local path. None otherwise."""
    data_dir = Path(plan["data_dir"]) if plan.get("data_dir") else Path(plan["folder"]) / ".terraform"
    try:  # what init recorded about the backend; no record: no backend block, so the implied local one
        backend = json.loads((data_dir / "terraform.tfstate").read_text()).get("backend") or {}
    except (OSError, ValueError):
        backend = {"type": "local", "config": {}}
    if backend.get("type") != "local":
        return None
    state = Path((backend.get("config") or {}).get("path") or "terraform.tfstate")
    state = (state if state.is_absolute() else Path(plan["folder"]) / state).resolve()
    return state if run_dir.resolve() in state.parents else None


def _swapped(plan: dict[str, Any], now: str) -> str:
    return (f"the plan file changed after it was made and shown to the approvers (sha256 {str(plan['sha256'])[:12]} "
            f"was approved, the file now has {now[:12]}); ask for a new deploy")


@contextmanager
def workspace_lock(redis: Redis, name: str, env: str, *, run_id: str, owner: str, wait_s: float,
                   ttl_s: float = LOCK_TTL_S, waiting: Callable[[Lock | None], object] | None = None) -> Iterator[Lock]:
    """Hold the apply lock of ``name`` in ``env`` (a fresh fencing token), renewed while the block runs;
    wait up to ``wait_s`` for another holder, then :class:`StageFailed` naming it. Released by its owner only."""
    locks, deadline, said = Locks(redis), time.monotonic() + wait_s, False
    while True:
        try:
            lock = locks.acquire(name, env, owner=owner, run_id=run_id, ttl_s=ttl_s)
            break
        except LockHeld as exc:
            holder = locks.holder(name, env)
            if time.monotonic() >= deadline:
                raise StageFailed(f"another apply of {name.split('/', 1)[1]}/{env} is running: run {exc.run_id} "
                                  f"of {exc.owner}; nothing was applied",
                                  hint="ask for the deploy again once that apply has finished") from exc
            if not said and waiting is not None:
                waiting(holder)
                said = True
            time.sleep(LOCK_POLL_S)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(redis, lock, stop), daemon=True, name=f"renew {name}")
    renewer.start()
    try:
        yield lock
    finally:
        stop.set()
        renewer.join(timeout=5)
        locks.release(name, env, run_id=run_id)


def _renew(redis: Redis, lock: Lock, stop: threading.Event) -> None:
    while not stop.wait(lock.ttl_s / 3):
        try:
            if not int(redis.eval(RENEW, 0, json.dumps([[lock.service, lock.env, lock.token]]), time.time(),
                                  lock.run_id)):
                logger.warning("run %s: the apply lock of %s in %s (token %s) was lost", lock.run_id, lock.service,
                               lock.env, lock.token)
                return
        except Exception:
            logger.exception("run %s: could not renew the apply lock of %s", lock.run_id, lock.service)


def _check_fence(redis: Redis, name: str, env: str, lock: Lock) -> None:
    holder = Locks(redis).holder(name, env)
    if holder is None or holder.run_id != lock.run_id or holder.token != lock.token:
        now = f"run {holder.run_id} (token {holder.token})" if holder else "nobody"
        raise StageFailed(f"the apply lock of {name} in {env} is no longer this run's (token {lock.token}; "
                          f"{now} holds it now); nothing was applied", hint="ask for the deploy again")


def _apply(tf: Terraform, body: bytes, *, fence: Callable[[], None]) -> None:
    """``terraform apply`` of ``body`` (the approved plan's bytes, in a file only this job wrote)."""
    with tempfile.TemporaryDirectory(prefix="orchestra-apply-") as private:
        planfile = Path(private) / checks.PLAN_FILE
        planfile.write_bytes(body)
        fence()
        done = tf.run("apply", "-input=false", "-no-color", "-lock-timeout=60s", str(planfile),
                      timeout=APPLY_TIMEOUT_S)
    error = checks.last_error(done.stderr or done.stdout)
    if done.returncode != 0 and "Saved plan is stale" in error:
        raise StageFailed(f"nothing was applied: the state changed after this plan was made (another apply went "
                          f"first), and Terraform refuses a stale plan ({error})",
                          hint="ask for a new deploy: it plans against the state as it is now")
    if done.returncode != 0:
        raise StageFailed(f"`{tf.name} apply` failed: {error}",
                          hint="what was made before the error is in the state; the next deploy plans the rest "
                               "and asks for an approval again")


def _waiting(plan: dict[str, Any], held: Lock | None) -> str:
    who = f"run {held.run_id} of {held.owner}" if held else "another run"
    return f"waiting for {who} to finish applying {plan['workspace']} (one apply at a time per workspace)"


def _branch_tip(run: Run) -> str | None:
    """Where the run's branch (its ref, else the repository's HEAD) points now; None for a tag or commit
    (they do not move) or a repository that is not git."""
    wanted = f"refs/heads/{run.ref}" if run.ref else "HEAD"
    try:
        listed = subprocess.run(["git", "ls-remote", "--", run.repo, wanted], capture_output=True, text=True,
                                timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StageFailed(f"could not tell where {run.ref or 'HEAD'} of {run.repo} points now: {exc}") from exc
    if listed.returncode != 0:
        if not run.ref:
            return None  # a folder that is not a git repository: no branch to move
        raise StageFailed(f"could not tell where {run.ref} of {run.repo} points now: {listed.stderr.strip()[-300:]}",
                          hint="nothing was applied; check that the repository can be reached")
    for line in listed.stdout.splitlines():
        sha, _, ref = line.partition("\t")
        if ref.strip() == wanted:
            return sha.strip()
    return None


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60).stdout.strip()


def _short(commit: str | None) -> str:
    return short_sha(commit) if commit else "(none)"
