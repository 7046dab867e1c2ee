"""What one release of a service sends to the cluster, decided before anything is sent.

* Its Deployment; its own Secret when the run carries secrets; the service's Service when there is none yet;
  and with an HTTPRoute one Service per version (the new release's and the live one's) for the route's
  weighted backends.
* Where its pods find ``secrets.keys``: the version's own Secret, or the platform's ``<service>-secrets``
  (``secrets.manager: kubernetes``), which must already hold every key: a missing one is refused with the
  command that adds it, and nothing is sent.
"""
from __future__ import annotations

from typing import Any

from agents.deploy.targets.base import Plan
from agents.deploy.targets.kubernetes import manifests as m
from agents.deploy.targets.kubernetes.api import KubeApi
from agents.deploy.targets.state import Release
from orchestra.config.types import KubernetesCluster


def manifests_for(api: KubeApi, cluster: KubernetesCluster, plan: Plan, replicas: int, current: Release | None, *,
                  secret_keys: list[str], secrets_manager: str) -> list[dict[str, Any]]:
    """The manifests of ``plan``'s release, at ``replicas`` pods, beside ``current`` (the release live now)."""
    refs = secret_refs(api, cluster.namespace, plan, secret_keys, secrets_manager)
    out = [m.deployment(plan, replicas=replicas, deadline_s=cluster.rollout_timeout, **refs)]
    if plan.secrets:
        out.insert(0, m.secret(plan))
    if current is None or api.get("Service", plan.service) is None:
        out.append(m.service(plan.service, m.labels(plan.service, plan.env, plan.version),
                             plan.port_hint or 5000))
    if cluster.httproute:
        out.append(m.service(m.name_for(plan.service, plan.version),
                             m.labels(plan.service, plan.env, plan.version), plan.port_hint or 5000))
        if current is not None:
            out.append(m.service(m.name_for(plan.service, current.version),
                                 m.labels(plan.service, plan.env, current.version), current.port))
    return out


def secret_refs(api: KubeApi, namespace: str, plan: Plan, secret_keys: list[str],
                secrets_manager: str) -> dict[str, Any]:
    """Where the pods find ``secrets.keys``: the version's own Secret, or the platform's (``kubernetes``
    manager), which must hold every key before anything is sent."""
    if plan.secrets:
        return {"secret_keys": sorted(plan.secrets)}
    if not secret_keys or secrets_manager != "kubernetes":
        return {}
    name = f"{plan.service}-secrets"
    found = api.get("Secret", name)
    have = set((found or {}).get("data") or {})
    missing = [k for k in secret_keys if k not in have]
    if missing:
        where = f"the Secret {name}" if found else f"no Secret {name} exists"
        raise m.InvalidManifest(f"secret {', '.join(missing)} is missing: {where} in namespace "
                                f"{namespace}" + (" lacks it" if found else ""),
                                hint=f"kubectl -n {namespace} create secret generic {name} "
                                     "--from-literal=KEY=...; nothing was sent to the cluster")
    return {"secret_keys": list(secret_keys), "secret_from": name}
