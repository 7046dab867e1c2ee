"""The iac stage: find the repository's infrastructure, or say why there is nothing to do.

Skipped (and saying so) when every service deploys to the local target (runtime docker) and the
repository has no Terraform. When ``infrastructure.path`` holds ``*.tf`` files they are checked with
``terraform fmt -check``; a file that is not formatted fails the gate, naming it. Plan and apply are
not built yet, and the thread is told so: nothing here changes any infrastructure.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from agents.context import AgentContext, StageResult

FMT_TIMEOUT_S = 60
LOCAL_RUNTIMES = frozenset({"docker"})


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
    remote = sorted({s.runtime for s in ctx.config.deployment.services
                     if s.name in ctx.run.services or not ctx.run.services} - LOCAL_RUNTIMES)
    try:
        files = terraform_files(ctx.workspace, infra.path)
    except ValueError as exc:
        return StageResult(False, str(exc))
    if not files:
        if not remote:
            return StageResult(True, f"skipped: every service deploys to this host (runtime docker) and "
                                     f"there is no Terraform at `{infra.path}`", {"skipped": True})
        return StageResult(True, f"no Terraform at `{infra.path}`: the {', '.join(remote)} target uses the "
                                 "resources its settings name (generating Terraform is not built yet)",
                           {"skipped": True})
    binary = shutil.which("terraform")
    if binary is None:
        return StageResult(False, "Terraform files found but `terraform` is not on the worker's PATH; "
                                  "install Terraform 1.x on the worker")
    folder = ctx.workspace / infra.path
    ctx.progress(f"checking {len(files)} Terraform file(s) at `{infra.path}`")
    try:
        done = subprocess.run([binary, "fmt", "-check", "-recursive", "-list=true", "-no-color"], cwd=folder,
                              capture_output=True, text=True, timeout=FMT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return StageResult(False, f"`terraform fmt -check` did not finish within {FMT_TIMEOUT_S}s")
    names = [str(Path(infra.path) / f.relative_to(folder)) for f in files]
    if done.returncode != 0:
        unformatted = [line.strip() for line in done.stdout.splitlines() if line.strip()]
        if not unformatted:
            error = (done.stderr.strip().splitlines() or ["unknown error"])[-1]
            return StageResult(False, f"`terraform fmt -check` could not read the files: {error}",
                               {"files": names})
        return StageResult(False, f"not formatted: {', '.join(unformatted)}; run `terraform fmt` and commit",
                           {"files": names, "unformatted": unformatted})
    return StageResult(True, f"{len(files)} Terraform file(s) at `{infra.path}` are formatted; plan and apply "
                             "are not built yet, nothing was changed", {"files": names})
