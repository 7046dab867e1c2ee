"""The objects the Kubernetes target sends, built as plain JSON and validated offline before any is sent.

* one Deployment per version, ``<service>-<version>``, whose pods carry ``orchestra.service``,
  ``orchestra.env`` and ``orchestra.version`` labels (Prometheus keeps them as per-version labels) and
  the ``prometheus.io/*`` annotations;
* one Service, ``<service>``, whose selector names the version that has the traffic (blue-green), or
  only the service while a canary splits traffic by replica ratio;
* with an HTTPRoute, one Service per version, ``<service>-<version>``, for the route's weighted backends.

:func:`validate` checks each object against the cluster version's schema with ``kubernetes-validate``
(strict: an unknown field is an error). HTTPRoute is a CRD the package has no schema for: the weights
we write into it are checked by :func:`backend_refs`.
"""
from __future__ import annotations

import re
from typing import Any

import kubernetes_validate

from agents.deploy.targets.base import Plan
from orchestra.errors import StageFailed

SERVICE, ENV, VERSION, RUN = "orchestra.service", "orchestra.env", "orchestra.version", "orchestra.run"
HTTP_PORT = 80
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


class InvalidManifest(StageFailed):
    """A manifest failed offline validation; nothing was sent."""


def name_for(service: str, version: str) -> str:
    """``web-3f9c2ab``: the Deployment (and per-version Service) of one version."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"{service}-{version}".lower()).strip("-")[:63].rstrip("-")
    if not _DNS_LABEL.fullmatch(name):
        raise InvalidManifest(f"`{service}-{version}` cannot name a Kubernetes object",
                              hint="versions must contain letters or digits")
    return name


def labels(service: str, env: str, version: str | None = None) -> dict[str, str]:
    """The labels that select one service (and one version of it) in one environment."""
    return {SERVICE: service, ENV: env, **({VERSION: version} if version else {})}


def secret_name(service: str, version: str) -> str:
    """``web-3f9c2ab-secrets``: the Secret holding one version's ``secrets.keys``."""
    return f"{name_for(service, version)[:55].rstrip('-')}-secrets"


def secret(plan: Plan) -> dict[str, Any]:
    """The Opaque Secret of ``plan.version``'s secrets (the values go to the API server, nowhere else)."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": secret_name(plan.service, plan.version),
                         "labels": labels(plan.service, plan.env, plan.version)},
            "stringData": dict(plan.secrets)}


def deployment(plan: Plan, *, replicas: int, deadline_s: float, secret_keys: list[str] | None = None,
               secret_from: str | None = None) -> dict[str, Any]:
    """The Deployment of ``plan.version``; each of ``secret_keys`` comes from the Secret ``secret_from``
    (default: the version's own, :func:`secret`)."""
    selected = labels(plan.service, plan.env, plan.version)
    env = {**plan.extra_env, "PORT": str(plan.port_hint or 5000), "HOST": "0.0.0.0",  # nosec B104: in the pod
           "APP_VERSION": plan.version, "ORCHESTRA_ENV": plan.env}
    port = plan.port_hint or 5000
    container = {
        "name": plan.service, "image": plan.image,
        "ports": [{"name": "http", "containerPort": port}],
        "env": [{"name": k, "value": v} for k, v in sorted(env.items()) if k not in (secret_keys or [])] + [
            {"name": k, "valueFrom": {"secretKeyRef": {"name": secret_from or secret_name(plan.service, plan.version),
                                                       "key": k}}} for k in sorted(secret_keys or [])],
        "readinessProbe": {"httpGet": {"path": plan.health, "port": port}, "periodSeconds": 2,
                           "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": plan.health, "port": port}, "initialDelaySeconds": 10,
                          "periodSeconds": 10},
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name_for(plan.service, plan.version),
                     "labels": {**selected, RUN: plan.run_id, "app.kubernetes.io/name": plan.service}},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": max(int(deadline_s), 1),
            "selector": {"matchLabels": selected},
            "template": {
                "metadata": {"labels": {**selected, "app.kubernetes.io/name": plan.service},
                             "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                                             "prometheus.io/path": plan.metrics_path}},
                "spec": {"containers": [container]},
            },
        },
    }


def service(name: str, selector: dict[str, str], target_port: int) -> dict[str, Any]:
    """A ClusterIP Service on port 80 in front of the pods ``selector`` picks."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "labels": {k: v for k, v in selector.items() if k != VERSION}},
            "spec": {"selector": selector,
                     "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": target_port}]}}


def validate(manifests: list[dict[str, Any]], version: str) -> None:
    """Every manifest against Kubernetes ``version``'s schema; InvalidManifest names the first problem."""
    known = kubernetes_validate.utils.all_versions()
    if not any(v.startswith(f"{version}.") or v == version for v in known):
        raise InvalidManifest(f"no schema to validate against Kubernetes {version}: kubernetes-validate knows "
                              f"{known[0]} to {known[-1]}", hint="set environments.<env>.kubernetes.version to "
                              "the cluster's version; nothing was sent to the cluster")
    for manifest in manifests:
        what = f"{manifest.get('kind')} {manifest.get('metadata', {}).get('name')}"
        _check_labels(manifest, what)
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            raise InvalidManifest(f"{what} is not valid for Kubernetes {version}: {path or '(top)'}: "
                                  f"{exc.message}", hint="nothing was sent to the cluster") from exc
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as exc:
            raise InvalidManifest(f"no schema to validate {what} against Kubernetes {version}",
                                  hint="set environments.<env>.kubernetes.version to a version "
                                       f"kubernetes-validate knows (e.g. {kubernetes_validate.latest_version()})")\
                from exc


def _check_labels(manifest: dict[str, Any], what: str) -> None:
    """Label values the API server would refuse (the schema only says "string"): a version or run id
    from outside must not reach the cluster half-applied."""
    spec = manifest.get("spec") or {}
    found = [manifest.get("metadata", {}).get("labels") or {}, spec.get("selector") or {},
             (spec.get("selector") or {}).get("matchLabels") or {},
             ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}]
    for labels_ in found:
        for key, value in labels_.items():
            if key == "matchLabels" or value is None:
                continue
            if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
                raise InvalidManifest(f"{what}: label {key}={value!r} is not a valid Kubernetes label value "
                                      "(at most 63 letters, digits, '-', '_' or '.', starting and ending "
                                      "with a letter or digit)", hint="nothing was sent to the cluster")


def backend_refs(weights: dict[str, int], port: int = HTTP_PORT) -> list[dict[str, Any]]:
    """An HTTPRoute rule's ``backendRefs`` for per-version Services named in ``weights``."""
    refs = []
    for name, weight in weights.items():
        if not _DNS_LABEL.fullmatch(name) or not 0 <= weight <= 1_000_000:
            raise InvalidManifest(f"HTTPRoute backend {name!r} with weight {weight} is not valid",
                                  hint="nothing was sent to the cluster")
        refs.append({"group": "", "kind": "Service", "name": name, "port": port, "weight": weight})
    return refs
