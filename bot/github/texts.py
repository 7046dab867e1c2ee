"""Every reply the GitHub ingress writes into a pull request, in one place."""
from __future__ import annotations

from collections.abc import Sequence

from handlers.plan import PlanEnv
from handlers.reply import Reply, ReplyKind
from orchestra.store import Run

HELP = (
    "**DevOps Orchestra** understands these comment commands:\n"
    "- `/orchestra deploy <env>`: deploy this pull request's head commit to `staging`, "
    "`development` or `production` (needs write permission)\n"
    "- `/orchestra validate`: validate this pull request's head commit (needs write permission; on a fork's "
    "pull request it lets that commit's tests run)\n"
    "- `/orchestra plan [env]`: show what a deploy would do, and plan this pull request's Terraform for `staging` "
    "(or the environment named): the iac stage's checks and `terraform plan`, nothing applied (the plan needs "
    "write permission)\n"
    "- `/orchestra status`: the runs of this pull request"
)
NOT_ALLOWED = (
    "DevOps Orchestra only takes commands from collaborators of this repository; "
    "nothing was started."
)
NEEDS_WRITE = (
    "`/orchestra deploy` needs write permission on this repository; nothing was started."
)
FROM_FORK = (
    "This pull request comes from a fork: DevOps Orchestra does not run commands on fork code; "
    "nothing was started. A maintainer can push the branch to this repository instead."
)
PLAN_STARTED = ("The Terraform of `{sha}` is being planned for {env} (run `{run_id}`): the iac stage's checks and "
                "`terraform plan`, nothing applied. The plan comes in the run's comment.")
PLAN_NEEDS_WRITE = "Planning the Terraform needs write permission on this repository; it was not planned."
PLAN_FROM_FORK = ("This pull request comes from a fork: its Terraform is not planned here (a plan runs the "
                  "repository's Terraform with the worker's credentials).")
FAILED = "Sorry, that command failed on our side; nothing was started. The error has been logged."
NEEDS_WRITE_VALIDATE = (
    "`/orchestra validate` needs write permission on this repository; nothing was started."
)
FORK_ALLOWED = (
    "Allowed by @{user}: the tests of `{sha}` run now (run {runs}). A new push needs a new `/orchestra validate`."
)
FORK_ALLOWED_LATER = (
    "Allowed by @{user}: the tests of `{sha}` run once its static analysis passes (run {runs}). "
    "A new push needs a new `/orchestra validate`."
)


def not_understood(error: str) -> str:
    return f"I did not understand that: {error}.\n\n{HELP}"


def refused(message: str, hint: str | None) -> str:
    return f"Not started: {message}" + (f"\n\n_{hint}_" if hint else "")


def status(runs: Sequence[Run], number: int) -> str:
    if not runs:
        return f"No DevOps Orchestra runs for pull request #{number} yet."
    lines = [f"Runs for pull request #{number} (newest first):", "",
             "| run | kind | env | commit | status | stage |", "|---|---|---|---|---|---|"]
    for run in runs:
        commit = (run.commit or "")[:7]
        lines.append(f"| `{run.id}` | {run.kind} | {run.env} | `{commit}` | {run.status.value} | "
                     f"{run.stage or '-'} |")
    return "\n".join(lines)


def plan(number: int, sha: str, services: Sequence[str], envs: Sequence[PlanEnv]) -> str:
    """What `/orchestra deploy <env>` would do for this pull request."""
    order = " → ".join(f"`{s}`" for s in services) or "nothing (no service's files changed)"
    lines = [f"**Plan for #{number}** at `{sha[:7]}`: services to build and deploy, in order: {order}.",
             "Each runs analyze → test → build → deploy, then is watched; a failure rolls the group back.", "",
             "| environment | strategy | approval | deploys on push to |", "|---|---|---|---|"]
    for env in envs:
        branches = ", ".join(f"`{b}`" for b in env.branches) or "-"
        lines.append(f"| {env.name} | {env.strategy} | {'required' if env.approval else 'no'} | {branches} |")
    lines += ["", "Start it with `/orchestra deploy <environment>`."]
    return "\n".join(lines)


def render(reply: Reply, *, number: int) -> str:
    """A handler's reply as a comment on pull request ``number``."""
    if reply.kind == ReplyKind.HELP:
        return HELP
    if reply.kind == ReplyKind.RUNS:
        return status(reply.runs, number)
    if reply.kind == ReplyKind.PLAN:
        return plan(number, reply.data["sha"], reply.data["services"], reply.data["envs"])
    if reply.kind == ReplyKind.FAILED:
        return FAILED
    return reply.text
