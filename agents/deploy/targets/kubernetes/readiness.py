"""Readiness from a Deployment's status, and crash reports from its pods.

No controller runs in our tests (kmock), so the test sets the status fields a Deployment controller
would: ``availableReplicas``, ``updatedReplicas``, ``observedGeneration`` and the ``Progressing``
condition. A real cluster sets the same fields.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from agents.deploy.targets.kubernetes.api import KubeApi
from agents.deploy.targets.state import Release
from orchestra.errors import StageFailed

POLL_S = 0.25
PODS_REPORTED = 3


def wait_available(api: KubeApi, release: Release, replicas: int, timeout: float,
                   sleep: Callable[[float], None] = time.sleep) -> float:
    """Seconds until ``replicas`` pods of ``release`` are available; StageFailed with the pods' crash
    report when the deadline passes or the Deployment reports that it stopped progressing."""
    started = time.monotonic()
    seen = "no status yet"
    while True:
        found = api.get("Deployment", release.container)
        if found is None:
            raise StageFailed(f"the Deployment {release.container} disappeared while waiting for it")
        ready, seen, stuck = _progress(found, replicas)
        if ready:
            return round(time.monotonic() - started, 2)
        waited = time.monotonic() - started
        if stuck or waited >= timeout:
            why = "stopped progressing" if stuck else f"was not available within {timeout:.0f}s"
            raise StageFailed(f"{release.container} {why}: {seen}\n{crash_report(api, release)}",
                              hint="the pods' logs are above; check the image, its health path and "
                                   "that it listens on $PORT")
        sleep(min(POLL_S, max(timeout - waited, 0.01)))


def _progress(deployment: dict[str, Any], replicas: int) -> tuple[bool, str, bool]:
    """(available?, what the status says, stopped progressing?)"""
    status = deployment.get("status") or {}
    generation = (deployment.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    current = generation is None or observed is None or observed >= generation
    available = int(status.get("availableReplicas") or 0)
    updated = status.get("updatedReplicas")
    stuck = next((c for c in status.get("conditions") or []
                  if c.get("type") == "Progressing" and c.get("status") == "False"), None)
    said = f"{available}/{replicas} pods available"
    if stuck is not None:
        said += f" ({stuck.get('reason')}: {stuck.get('message') or ''})".rstrip()
    ready = current and available >= replicas and (updated is None or int(updated) >= replicas)
    return ready, said, stuck is not None


def crash_report(api: KubeApi, release: Release, lines: int = 20) -> str:
    """Why the release's pods are not serving: each pod's container states and the tail of its log."""
    found = api.get("Deployment", release.container)
    selector = ((((found or {}).get("spec") or {}).get("selector") or {}).get("matchLabels")) or {}
    if not selector:
        return "(no pods: the Deployment is gone)"
    pods = api.pods(selector)
    if not pods:
        return "(no pods were created: check the namespace's quotas and events)"
    parts = []
    for pod in pods[:PODS_REPORTED]:
        name = pod["metadata"]["name"]
        parts.append(f"pod {name}: {_states(pod)}\n{api.pod_log(name, lines).rstrip()}")
    return "\n".join(parts)


def _states(pod: dict[str, Any]) -> str:
    said = []
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        state = status.get("state") or {}
        for phase in ("waiting", "terminated"):
            if state.get(phase):
                said.append(f"{status.get('name')} {phase}: {state[phase].get('reason')}")
        if status.get("restartCount"):
            said.append(f"{status['restartCount']} restarts")
    return ", ".join(said) or (pod.get("status") or {}).get("phase") or "no status"
