"""Drift: an environment's Terraform planned against its live infrastructure, and what changed outside it.

``terraform plan -refresh-only -detailed-exitcode`` reads every resource in the environment's state back from
the provider and compares: exit 0 is no drift, exit 2 lists the resources changed (or deleted) outside
Terraform. Nothing is applied and the state is not written (a refresh-only plan saved to a file changes
nothing until it is applied, and it never is: the file is deleted once read).

Which Terraform and which state: the repository's own files at ``infrastructure.path`` with the backend they
declare (the bot's local state when they leave it to the bot, as :mod:`agents.iac.backend` says), else the
Terraform the iac stage generates for the environment with its local state under
``$ORCHESTRA_WORKDIR/iac-state/<project>/<env>/`` (the same files and the same state the stage planned).
Only resource addresses, and the names of the attributes that changed, leave this module: never a value.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.context import AgentContext, StageResult
from agents.iac import backend, checks, generate
from agents.iac.stage import terraform_files
from agents.iac.terraform import Terraform, prepare
from orchestra.errors import OrchestraError, StageFailed

if TYPE_CHECKING:
    from orchestra.config import ProjectConfig

DRIFT_PLAN = "orchestra-drift.tfplan"
MAX_LISTED = 20
MAX_ATTRIBUTES = 6
CHANGES_NOTHING = "nothing was applied or changed"


@dataclass(frozen=True)
class Target:
    """The Terraform an environment's drift is looked for in."""

    folder: Path
    what: str  # how the thread names it
    state: Path | None = None  # the bot's local state for these files; None: the backend the files declare
    data_dir: Path | None = None  # the repository's files: their .terraform folder kept outside the checkout
    region: str | None = None  # the configuration's region, when it names one


@dataclass
class Drift:
    """Resources whose live infrastructure differs from the state: address -> what changed."""

    changed: dict[str, list[str]] = field(default_factory=dict)  # address -> names of the changed attributes
    deleted: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.changed or self.deleted)

    def lines(self) -> list[str]:
        """One line per drifted resource (capped), for the thread."""
        lines = [f"{address} changed outside Terraform ({_attributes(names)})"
                 for address, names in self.changed.items()]
        lines += [f"{address} was deleted outside Terraform" for address in self.deleted]
        if len(lines) > MAX_LISTED:
            lines = [*lines[:MAX_LISTED], f"… and {len(lines) - MAX_LISTED} more"]
        return lines

    def data(self) -> dict[str, Any]:
        return {"changed": self.changed, "deleted": self.deleted}


def run(ctx: AgentContext, *, budget_s: float | None = None) -> StageResult:
    """The drift check of ``ctx.run.env``: passed when the live infrastructure matches the state. ``budget_s``
    bounds its Terraform commands in all (the stage's own budget otherwise)."""
    env = ctx.run.env
    try:
        found = _terraform_for(ctx)
    except (ValueError, OrchestraError) as exc:
        return StageResult(False, f"{env}: drift not checked: {exc}")
    if isinstance(found, str):
        return StageResult(True, f"{env}: {found}", {"env": env, "checked": False})
    what, state = found.what, found.state
    s3 = ctx.config.infrastructure.backend.s3  # the state in S3: whether there is any is read after init
    if state is not None and not state.is_file() and s3 is None:
        return StageResult(True, f"{env}: no state yet for {what} (nothing applied there): no drift to look for",
                           {"env": env, "checked": False, "no_state": True})
    tf: Terraform | None = None
    try:
        tf = prepare(ctx.settings, found.folder, _scratch(ctx), data_dir=found.data_dir)
        if budget_s is not None:
            tf.deadline = min(tf.deadline, time.monotonic() + budget_s)
        _aws_variables(tf, found.region)
        ctx.progress(f"{tf.name} {tf.version}: refreshing {what} against {env}'s live infrastructure")
        backend.init(tf, s3, project=ctx.config.project.name, env=env, scratch=_scratch(ctx), local_state=state,
                     generated=state is not None)
        if not _managed(tf):
            return StageResult(True, f"{env}: no state yet for {what} (no resources in it): no drift to look for",
                               {"env": env, "checked": False, "no_state": True})
        drift = check(tf)
    except StageFailed as exc:
        said = f"{tf.name} {tf.version}: " if tf is not None and tf.version else ""
        return StageResult(False, f"{env}: drift not checked: {said}{exc}", {"env": env, "checked": False})
    data = {"env": env, "checked": True, "drift": drift.data(), "terraform": tf.name,
            "terraform_version": tf.version}
    if not drift.found:
        return StageResult(True, f"{env}: no drift: the live infrastructure matches the state of {what}; "
                                 f"{CHANGES_NOTHING}", data)
    count = len(drift.changed) + len(drift.deleted)
    return StageResult(False, f"{env}: drift in {count} resource(s) of {what}: " + "; ".join(drift.lines())
                       + f". Apply the Terraform to put them back, or change it to match; {CHANGES_NOTHING}", data)


def check(tf: Terraform) -> Drift:
    """``plan -refresh-only``: the resources changed outside Terraform (the plan file is deleted once read)."""
    done = tf.run("plan", "-refresh-only", "-input=false", "-no-color", "-lock-timeout=60s", "-detailed-exitcode",
                  f"-out={DRIFT_PLAN}")
    try:
        if done.returncode == 0:
            return Drift()
        if done.returncode != 2:
            error = checks._last_error(done.stderr or done.stdout)
            raise StageFailed(f"`{tf.name} plan -refresh-only` failed: {error}",
                              hint="check the AWS credentials, region and endpoint the worker has; nothing was changed")
        saved = tf.run("show", "-json", "-no-color", DRIFT_PLAN)
        if saved.returncode != 0:
            raise StageFailed(f"`{tf.name} show` could not read the plan: {checks._last_error(saved.stderr)}")
        return summarize(json.loads(saved.stdout))
    finally:
        (tf.folder / DRIFT_PLAN).unlink(missing_ok=True)  # it holds the refreshed values


def summarize(plan_json: dict[str, Any]) -> Drift:
    """The drifted resources of ``show -json``'s ``resource_drift``: addresses and attribute names only."""
    drift = Drift()
    for change in plan_json.get("resource_drift") or []:
        if change.get("mode") == "data":
            continue
        address, actions = str(change.get("address")), change.get("change") or {}
        if actions.get("actions") == ["delete"]:
            drift.deleted.append(address)
        else:
            before, after = actions.get("before") or {}, actions.get("after") or {}
            drift.changed[address] = sorted(k for k in {*before, *after} if before.get(k) != after.get(k))
    return drift


def state_per_environment(workspace: Path, config: ProjectConfig) -> bool:
    """Whether each environment has a state of its own: in S3 (infrastructure.backend.s3, one key per environment)
    or the bot's local one (generated Terraform, or files leaving the backend to it); the repository's own files
    with their own backend keep one, whatever environment is asked about."""
    if config.infrastructure.backend.s3 is not None:
        return True
    try:
        return not terraform_files(workspace, config.infrastructure.path) or \
            backend.left_to_us(workspace / config.infrastructure.path)
    except ValueError:
        return False  # refused when it is checked, once


def _terraform_for(ctx: AgentContext) -> Target | str:
    """The environment's Terraform, or why there is none."""
    infra = ctx.config.infrastructure
    if terraform_files(ctx.workspace, infra.path):
        folder = ctx.workspace / infra.path
        state = backend.local_state(ctx.settings.workdir, ctx.config.project.name, ctx.run.env) \
            if backend.left_to_us(folder) else None
        return Target(folder, f"the Terraform at `{infra.path}`", state=state,
                      data_dir=_scratch(ctx) / "terraform-data")
    if not any(s.runtime in generate.spec.GENERATED_RUNTIMES for s in ctx.config.deployment.services):
        return f"no Terraform at `{infra.path}` and none generated for these services: no drift to look for"
    spec = generate.spec_for(ctx.config, ctx.run.env)
    folder = _scratch(ctx) / "generated"
    generate.write(generate.render(spec), folder)
    state = backend.local_state(ctx.settings.workdir, spec.project, ctx.run.env)
    return Target(folder, "the generated Terraform", state=state, region=spec.region)


def _managed(tf: Terraform) -> bool:
    """Does the state hold any resource? (``state list`` prints nothing for an empty state, and says so for a
    missing one.)"""
    done = tf.run("state", "list", "-no-color")
    if done.returncode != 0 and "No state file was found" in done.stderr:
        return False
    if done.returncode != 0:
        raise StageFailed(f"`{tf.name} state list` failed: {checks._last_error(done.stderr or done.stdout)}")
    return any(line.strip() and not line.startswith("data.") for line in done.stdout.splitlines())


def _aws_variables(tf: Terraform, region: str | None) -> None:
    """As the iac stage sets them: the generated Terraform's endpoint (AWS_ENDPOINT_URL, for a local stand-in)
    and, when the configuration names no region, the worker's."""
    tf.env["TF_VAR_aws_endpoint"] = tf.env.get("AWS_ENDPOINT_URL", "")
    worker_region = tf.env.get("AWS_REGION") or tf.env.get("AWS_DEFAULT_REGION")
    if region is None and worker_region:
        tf.env["TF_VAR_region"] = worker_region


def _scratch(ctx: AgentContext) -> Path:
    return ctx.settings.run_dir(ctx.run.id) / "drift"


def _attributes(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_ATTRIBUTES]) + (f" and {len(names) - MAX_ATTRIBUTES} more" if len(names) >
                                                 MAX_ATTRIBUTES else "")
    return shown or "attributes"
