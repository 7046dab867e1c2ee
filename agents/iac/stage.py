"""The iac stage: the run's infrastructure checked and planned before anything deploys.

* Every service on this host (runtime docker) and no Terraform at ``infrastructure.path``: skipped, saying so.
* Terraform files at ``infrastructure.path``: those, as they are.
* None there but ``runtime: ecs``, ``ec2`` or ``lambda`` services: Terraform generated from devops_orchestra.yaml
  (:mod:`agents.iac.generate`) into the run's ``infrastructure/generated/``, offered as files in the
  result, never committed.

Then ``init`` (providers from the operator's CLI configuration, the mirror setting or the registry),
``fmt -check``, ``validate`` and ``plan -out``; the plan's summary by resource goes into the result and
the thread. Generated Terraform, and the repository's own when it leaves the backend to us (an empty
``backend "local" {}``, as the generated files have), keep their state in the local backend under the workdir,
one state per project and environment. Nothing is applied here: the saved plan is recorded on the run (its
sha256 too) and, when it changes something, the iac_apply stage applies exactly that file after an approval
(:mod:`agents.iac.apply`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.context import AgentContext, StageResult
from agents.iac import apply as applying
from agents.iac import backend, checks, generate, policy
from agents.iac.generate import clouds, llm_fill
from agents.iac.terraform import Terraform, prepare
from orchestra.errors import OrchestraError, StageFailed

LOCAL_RUNTIMES = frozenset({"docker"})
GENERATED_DIR = "infrastructure/generated"
MAX_OFFERED_CHARS = 20_000  # the generated files carried in the event; all of them stay in the run's folder
NOT_APPLIED = "nothing was applied: an approver's approval of this plan comes first (the iac_apply stage)"
NO_CHANGES = "nothing was applied: the plan changes nothing"


def terraform_files(workspace: Path, rel: str) -> list[Path]:
    """The ``*.tf`` files under ``rel``; a folder that leads outside the repository is refused."""
    root = workspace.resolve()
    folder = (workspace / rel).resolve()
    if folder != root and root not in folder.parents:
        raise ValueError(f"infrastructure.path `{rel}` leads outside the repository (a symbolic link?); "
                         "point it at a folder inside the repository")
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.rglob("*.tf")):
        if ".terraform" in path.relative_to(folder).parts:
            continue
        if root not in path.resolve().parents:
            raise ValueError(f"{path.relative_to(workspace)} leads outside the repository (a symbolic link); "
                             "keep the Terraform files inside it")
        found.append(path)
    return found


def run(ctx: AgentContext) -> StageResult:
    infra = ctx.config.infrastructure
    chosen = [s for s in ctx.config.deployment.services if s.name in ctx.run.services or not ctx.run.services]
    remote = sorted({s.runtime for s in chosen} - LOCAL_RUNTIMES)
    try:
        files = terraform_files(ctx.workspace, infra.path)
    except ValueError as exc:
        return StageResult(False, str(exc))
    if files:
        folder = ctx.workspace / infra.path
        state = _state(ctx) if backend.left_to_us(folder) else None  # committed generated files: their state
        return _checked(ctx, folder, infra.path, state=state, data_dir=_scratch(ctx) / "terraform-data",
                        data={"files": [str(Path(infra.path) / f.relative_to(folder)) for f in files]})
    generated = sorted({s.runtime for s in chosen} & set(generate.spec.GENERATED_RUNTIMES))
    other_clouds = clouds.clouds_of({s.runtime for s in chosen})
    if other_clouds:  # Cloud Run, Container Apps: generated, formatted and policy-checked, not applied here
        if generated:
            return StageResult(False, f"a run of both AWS ({', '.join(generated)}) and cloudrun or containerapps "
                                      "services cannot be generated together: deploy them in separate runs")
        return clouds.checked(ctx, other_clouds, infra.path)
    if not generated:
        if not remote:
            return StageResult(True, f"skipped: every service deploys to this host (runtime docker) and "
                                     f"there is no Terraform at `{infra.path}`", {"skipped": True})
        return StageResult(True, f"no Terraform at `{infra.path}`: the {', '.join(remote)} target uses the "
                                 "cluster its settings name (Terraform is generated for ecs, ec2, lambda, cloudrun "
                                 "and containerapps only)",
                           {"skipped": True})
    return _generated(ctx, infra.path)


def _generated(ctx: AgentContext, path: str) -> StageResult:
    """Generate Terraform for the run's AWS services, offer it, and check and plan it."""
    try:
        spec = generate.spec_for(ctx.config, ctx.run.env, ctx.run.services or None)
    except OrchestraError as exc:
        return StageResult(False, f"no Terraform at `{path}` and none can be generated: {exc}")
    folder = _scratch(ctx) / "generated"
    files = generate.render(spec)
    generate.write(files, folder)
    services = [*spec.ecs_services, *spec.ec2_services, *spec.lambda_services]
    ctx.progress(f"no Terraform at `{path}`: generated {len(files)} file(s) for {', '.join(services)} into "
                 f"{GENERATED_DIR}/", files=sorted(files))
    offer = {"folder": str(folder), "files": _offered(files),
             "note": f"generated, not committed: review them and commit them under `{path}` to own them"}
    state = _state(ctx)
    return llm_fill.with_extra(ctx, spec, files, folder, lambda: _checked(  # resources.extra: extra.tf by the model
        ctx, folder, f"{GENERATED_DIR}/", state=state, data={"generated": dict(offer)}, region=spec.region,
        what=f"generated Terraform ({len(files)} files in {GENERATED_DIR}/, offered, not committed)"))


def _state(ctx: AgentContext) -> Path:
    return backend.local_state(ctx.settings.workdir, ctx.config.project.name, ctx.run.env)


def _scratch(ctx: AgentContext) -> Path:
    return ctx.settings.run_dir(ctx.run.id) / "infrastructure"


def _checked(ctx: AgentContext, folder: Path, shown: str, *, state: Path | None, data: dict[str, Any],
             region: str | None = None, what: str = "", data_dir: Path | None = None) -> StageResult:
    """fmt, init, validate and plan ``folder``; the stage's result, its figures in ``data``."""
    what = what or f"Terraform at `{shown}`"
    tf: Terraform | None = None
    try:
        tf = prepare(ctx.settings, folder, _scratch(ctx), data_dir=data_dir)
        _aws_variables(tf, region)
        data.update(terraform=tf.name, terraform_version=tf.version)
        ctx.progress(f"{tf.name} {tf.version}; providers from {tf.providers}; checking {what}")
        checks.fmt_check(tf, shown)
        data["state"] = backend.init(tf, ctx.config.infrastructure.backend.s3, project=ctx.config.project.name,
                                     env=ctx.run.env, scratch=_scratch(ctx), local_state=state,
                                     generated=state is not None)
        checks.validate(tf, shown)
        scanned = policy.scan(folder, shown, _scratch(ctx), cache=ctx.settings.cache / "checkov")
        data["policy"] = scanned.data()
        ctx.progress(f"{what}: formatted and valid; planning")
        summary = checks.plan(tf, shown)
    except StageFailed as exc:
        said = f"{tf.name} {tf.version}: " if tf is not None and tf.version else ""
        return StageResult(False, f"{said}{exc}", data)
    data["plan"] = {**summary.data(), "sha256": applying.record_plan(ctx, tf, summary)["sha256"]}
    detail = f" ({summary.by_type()})" if summary.changes else ""
    return StageResult(True, f"{tf.name} {tf.version}: {what}: fmt and validate passed; {scanned.line()}; "
                             f"plan: {summary.line()}{detail}; {NOT_APPLIED if summary.changes else NO_CHANGES}", data)


def _aws_variables(tf: Terraform, region: str | None) -> None:
    """The generated Terraform's endpoint (AWS_ENDPOINT_URL, for a local stand-in) and, when the configuration
    names no region, the worker's own; variables other Terraform does not declare are ignored by it."""
    tf.env["TF_VAR_aws_endpoint"] = tf.env.get("AWS_ENDPOINT_URL", "")
    worker_region = tf.env.get("AWS_REGION") or tf.env.get("AWS_DEFAULT_REGION")
    if region is None and worker_region:
        tf.env["TF_VAR_region"] = worker_region


def _offered(files: dict[str, str]) -> dict[str, str]:
    """The generated files for the event, at most MAX_OFFERED_CHARS in all (the rest: see the folder)."""
    offered, room = {}, MAX_OFFERED_CHARS
    for name, text in files.items():
        offered[f"{GENERATED_DIR}/{name}"] = text if len(text) <= room else "(too long for the event: see the folder)"
        room -= min(len(text), room)
    return offered
