"""How traffic moves between two versions on Kubernetes.

* :class:`SelectorSplit` (blue-green): the Service's selector names one version; all or nothing.
* :class:`ReplicaSplit` (canary and rolling without an HTTPRoute): the Service selects every version of
  the service and the split is the ratio of ready pods, so it is approximate (10% of 4 replicas is
  1 pod of 4, 25%); the applied split is what is reported.
* :class:`RouteSplit` (canary and rolling with an HTTPRoute): exact weights on the route's backends,
  one Service per version.

Every split moves traffic first and scales afterwards when taking traffic away, and scales (and waits
until the pods are available) before giving a version traffic.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

from agents.deploy.targets.kubernetes import manifests as m
from agents.deploy.targets.kubernetes.api import KubeApi
from agents.deploy.targets.state import Release

WaitAvailable = Callable[[Release, int], float]  # (release, replicas) -> seconds until available


@dataclass
class Cluster:
    """What a split needs: the API, the service's labels, its replica count and how to wait for pods."""

    api: KubeApi
    service: str
    env: str
    replicas: int
    wait: WaitAvailable

    def select(self, version: str | None) -> None:
        """Point the Service at one version, or at every version of the service (``None``)."""
        selector: dict[str, str | None] = dict(m.labels(self.service, self.env, version))
        if version is None:
            selector[m.VERSION] = None  # merge-patch: remove the key
        self.api.patch("Service", self.service, {"spec": {"selector": selector}})

    def scale(self, release: Release, replicas: int) -> None:
        self.api.patch("Deployment", release.container, {"spec": {"replicas": replicas}})

    def ready(self, release: Release, replicas: int) -> None:
        self.scale(release, replicas)
        if replicas > 0:
            self.wait(release, replicas)


@dataclass
class SelectorSplit:
    """All traffic to one version by the Service's selector."""

    cluster: Cluster

    def split(self, new: Release, old: Release | None, weight: int) -> dict[str, int]:
        chosen = new if weight >= 50 or old is None else old
        self.cluster.select(chosen.version)
        return {new.version: 100 if chosen is new else 0, **({old.version: 0 if chosen is new else 100} if old else {})}


@dataclass
class ReplicaSplit:
    """Traffic in proportion to ready pods behind one Service (approximate)."""

    cluster: Cluster

    def split(self, new: Release, old: Release | None, weight: int) -> dict[str, int]:
        c = self.cluster
        if old is None or weight >= 100:
            c.ready(new, c.replicas)
            c.select(new.version)
            if old is not None:
                c.ready(old, c.replicas)  # kept warm for an instant rollback until the keep window ends
            return {new.version: 100, **({old.version: 0} if old else {})}
        if weight <= 0:
            c.select(old.version)
            c.scale(new, 0)
            return {old.version: 100, new.version: 0}
        new_n, old_n = pods_for(weight, c.replicas)
        c.ready(new, new_n)
        c.ready(old, old_n)
        c.select(None)
        share = round(100 * new_n / (new_n + old_n))
        return {new.version: share, old.version: 100 - share}


def pods_for(weight: int, replicas: int) -> tuple[int, int]:
    """(new, old) pod counts nearest ``weight`` percent, each at least one; with one replica, one each."""
    total = max(replicas, 2)
    new = min(max(round(total * weight / 100), 1), total - 1)
    return new, total - new


@dataclass
class RouteSplit:
    """Exact weights on a Gateway API HTTPRoute's backends (one Service per version)."""

    cluster: Cluster
    route: str

    def split(self, new: Release, old: Release | None, weight: int) -> dict[str, int]:
        weights = {new.version: weight, **({old.version: 100 - weight} if old else {})}
        if weight > 0:
            self.cluster.ready(new, self.cluster.replicas)
        self.apply(weights)
        if weight >= 100 or weight <= 0:  # in-cluster callers of the Service follow the route
            self.cluster.select(new.version if weight >= 100 else old.version if old else None)
        return weights

    def apply(self, weights: dict[str, int]) -> None:
        """Write ``weights`` (version -> percent) into every rule of the route."""
        c = self.cluster
        refs = m.backend_refs({m.name_for(c.service, v): w for v, w in weights.items()})
        route = c.api.route(self.route)
        rules = copy.deepcopy((route.get("spec") or {}).get("rules") or [{}])
        for rule in rules:
            rule["backendRefs"] = refs
        c.api.patch_route(self.route, {"spec": {"rules": rules}})
