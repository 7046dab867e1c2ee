"""The Kubernetes API as the target uses it, through the official ``kubernetes`` client.

:func:`connect` builds a client from an environment's ``kubernetes`` settings (a kubeconfig file and
context, else in-cluster config inside a pod, else ``~/.kube/config``). :class:`KubeApi` is the
handful of calls the target makes; each is counted and timed (``stats``) so that a benchmark can tell
the time spent waiting for the API server from the time spent in our code, and each translates the
client's errors into ones that say what to fix.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError

from orchestra.config.types import KubernetesCluster
from orchestra.errors import StageFailed

logger = logging.getLogger(__name__)

GATEWAY_GROUP, GATEWAY_VERSION, HTTPROUTES = "gateway.networking.k8s.io", "v1", "httproutes"
REQUEST_TIMEOUT_S = 15.0


class KubernetesError(StageFailed):
    """The cluster refused or could not be reached."""


def connect(cluster: KubernetesCluster) -> k8s.ApiClient:
    """An API client for ``cluster``: its kubeconfig (and context), else in-cluster, else ~/.kube/config."""
    try:
        if cluster.kubeconfig is None:
            try:
                configuration = k8s.Configuration()
                k8s_config.incluster_config.InClusterConfigLoader(
                    k8s_config.incluster_config.SERVICE_TOKEN_FILENAME,
                    k8s_config.incluster_config.SERVICE_CERT_FILENAME).load_and_set(configuration)
                return k8s.ApiClient(configuration)
            except ConfigException:
                pass  # not inside a pod: fall back on the default kubeconfig
        return k8s_config.new_client_from_config(config_file=cluster.kubeconfig, context=cluster.context,
                                                 persist_config=False)
    except (ConfigException, OSError) as exc:
        where = cluster.kubeconfig or "~/.kube/config (and not running inside a cluster)"
        raise KubernetesError(f"cannot use the kubeconfig {where}: {exc}",
                              hint="set environments.<env>.kubernetes.kubeconfig and context in "
                                   "devops_orchestra.yaml") from exc


@dataclass
class CallStats:
    """How many API calls were made and how long the API server took to answer them."""

    calls: int = 0
    seconds: float = 0.0
    by_call: dict[str, int] = field(default_factory=dict)


class KubeApi:
    """The calls the Kubernetes target makes, in one namespace."""

    def __init__(self, api_client: k8s.ApiClient, namespace: str) -> None:
        self.client = api_client
        self.namespace = namespace
        self.apps = k8s.AppsV1Api(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.custom = k8s.CustomObjectsApi(api_client)
        self.stats = CallStats()

    def _call(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, _request_timeout=REQUEST_TIMEOUT_S, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                raise
            raise KubernetesError(f"the Kubernetes API refused {name} in namespace {self.namespace}: "
                                  f"HTTP {exc.status} {exc.reason}: {_message(exc)}",
                                  hint=_hint(exc.status)) from exc
        except HTTPError as exc:
            raise KubernetesError(f"the Kubernetes API could not be reached for {name}: {exc}",
                                  hint="check the kubeconfig's server address and the network") from exc
        finally:
            self.stats.calls += 1
            self.stats.seconds += time.perf_counter() - started
            self.stats.by_call[name] = self.stats.by_call.get(name, 0) + 1

    def _verb(self, verb: str, kind: str) -> Callable[..., Any]:
        """``create`` + ``Deployment`` -> AppsV1Api.create_namespaced_deployment."""
        api: Any = self.apps if kind == "Deployment" else self.core
        return getattr(api, f"{verb}_namespaced_{kind.lower()}")  # type: ignore[no-any-return]

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """An object as plain JSON, or None when it does not exist."""
        read = self._verb("read", kind)
        try:
            obj = self._call(f"get {kind}", read, name, self.namespace)
        except ApiException:
            return None
        return dict(self.client.sanitize_for_serialization(obj))

    def apply(self, manifest: dict[str, Any]) -> None:
        """Create the object, or patch it when it already exists."""
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        create = self._verb("create", kind)
        try:
            self._call(f"create {kind}", create, self.namespace, manifest)
        except KubernetesError as exc:
            if not isinstance(exc.__cause__, ApiException) or exc.__cause__.status != 409:
                raise
            self.patch(kind, name, manifest)

    def patch(self, kind: str, name: str, body: dict[str, Any]) -> None:
        patch = self._verb("patch", kind)
        self._call(f"patch {kind}", patch, name, self.namespace, body)

    def delete(self, kind: str, name: str) -> None:
        delete = self._verb("delete", kind)
        try:
            self._call(f"delete {kind}", delete, name, self.namespace)
        except ApiException:
            pass  # already gone

    def deployments(self, labels: dict[str, str]) -> list[dict[str, Any]]:
        """Deployments carrying ``labels`` (filtered here too: a selector is a request, not a promise)."""
        found = self._call("list Deployment", self.apps.list_namespaced_deployment, self.namespace,
                           label_selector=_selector(labels))
        items = [dict(self.client.sanitize_for_serialization(d)) for d in found.items]
        return [d for d in items if _has_labels(d, labels)]

    def pods(self, labels: dict[str, str]) -> list[dict[str, Any]]:
        found = self._call("list Pod", self.core.list_namespaced_pod, self.namespace,
                           label_selector=_selector(labels))
        items = [dict(self.client.sanitize_for_serialization(p)) for p in found.items]
        return [p for p in items if _has_labels(p, labels)]

    def pod_log(self, pod: str, lines: int) -> str:
        try:
            return str(self._call("read Pod log", self.core.read_namespaced_pod_log, pod, self.namespace,
                                  tail_lines=lines))
        except (ApiException, KubernetesError) as exc:
            return f"(no log for pod {pod}: {exc})"

    def route(self, name: str) -> dict[str, Any]:
        """A Gateway API HTTPRoute; a clear error when the platform has not created it."""
        try:
            return dict(self._call("get HTTPRoute", self.custom.get_namespaced_custom_object, GATEWAY_GROUP,
                                   GATEWAY_VERSION, self.namespace, HTTPROUTES, name))
        except ApiException as exc:
            raise KubernetesError(f"the HTTPRoute {name} does not exist in namespace {self.namespace}",
                                  hint="create it attached to your Gateway (the deploy only moves its "
                                       "weights), or remove `httproute` to split by replica ratio") from exc

    def patch_route(self, name: str, body: dict[str, Any]) -> None:
        self._call("patch HTTPRoute", self.custom.patch_namespaced_custom_object, GATEWAY_GROUP,
                   GATEWAY_VERSION, self.namespace, HTTPROUTES, name, body)

    def close(self) -> None:
        self.client.close()


def _selector(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _has_labels(obj: dict[str, Any], labels: dict[str, str]) -> bool:
    have = (obj.get("metadata") or {}).get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())


def _message(exc: ApiException) -> str:
    import json

    try:
        return str(json.loads(exc.body or "{}").get("message", "")).splitlines()[0][:300]
    except (ValueError, AttributeError, IndexError):
        return str(exc.body or "")[:300]


def _hint(status: int | None) -> str:
    if status in (401, 403):
        return "the kubeconfig's user may not do this: grant it get/list/create/patch/delete on " \
               "deployments, services and pods (and patch on httproutes) in the namespace"
    return "see the message; the manifests were validated before they were sent"
