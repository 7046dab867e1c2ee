"""The rollback stage: each service of the run back on its previous (or the requested) version, in reverse order."""
from __future__ import annotations

from agents.context import AgentContext, StageResult
from agents.deploy import stage as deploy


def run(ctx: AgentContext) -> StageResult:
    """Roll every service of the run back; the stage passes only if each one did."""
    results = [deploy.rollback(ctx, service, to_version=ctx.run.origin.get("to_version"))
               for service in reversed(ctx.run.services)]
    return StageResult(all(r.passed for r in results), "; ".join(r.summary for r in results),
                       {"services": {r.data.get("service"): r.data for r in results}})
