"""A mock Kubernetes API on loopback (kmock), and the controllers it does not run, played by the test.

:class:`MockCluster` serves kmock's emulator on 127.0.0.1 in a thread and writes a kubeconfig for it,
so the product reaches it through the official client exactly as it would a cluster. kmock stores
objects but runs no controllers, so :class:`Controllers` does what the Deployment controller and the
kubelet would, through the same API: it sets each Deployment's status from its spec (every pod
available), or, for an image named in ``crashing``, no pod available, a pod in CrashLoopBackOff with a
log, and (after ``stuck_after_s``) the ``Progressing=False ProgressDeadlineExceeded`` condition.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kmock
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

CONTEXT = "mock"
CONTROLLERS_AGENT = "test-controllers"


class MockCluster:
    """kmock's Kubernetes emulator on a loopback port, with a kubeconfig pointing at it."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.url = ""
        self.emulator: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kmock", daemon=True)

    def start(self) -> MockCluster:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("kmock did not start within 10 s")
        return self

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
            self.emulator, self.url = emulator, str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def kubeconfig(self, namespace: str = "shop") -> Path:
        """A kubeconfig whose context ``mock`` is this server."""
        path = self.workdir / "kubeconfig.yaml"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": CONTEXT,
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "test-token"}}],
            "contexts": [{"name": CONTEXT, "context": {"cluster": "kmock", "user": "tester",
                                                         "namespace": namespace}}]}))
        return path

    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request the product sent (not the test's controllers), in order."""
        return [(str(r.method).upper().rsplit(".", 1)[-1], str(r.url.path)) for r in list(self.emulator)
                if r.headers.get("User-Agent") != CONTROLLERS_AGENT]

    def changes(self) -> list[tuple[str, str]]:
        """The requests that would change the cluster (create, patch, update, delete)."""
        return [(m, p) for m, p in self.requests() if m in ("POST", "PATCH", "PUT", "DELETE")]

    def on_log(self, namespace: str, pod: str, text: str) -> None:
        """Serve ``text`` as the pod's log (the kubelet's part)."""
        self.emulator[f"get /api/v1/namespaces/{namespace}/pods/{pod}/log"] << text


class Controllers:
    """The Deployment controller and kubelet, reduced to what the target reads, through the real API."""

    def __init__(self, cluster: MockCluster, namespace: str, *, crashing: set[str] | None = None,
                 stuck_after_s: float = 0.5, interval_s: float = 0.02) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.crashing = crashing if crashing is not None else set()
        self.slow: dict[str, float] = {}  # image -> seconds before its pods become available
        self.available_at: dict[str, float] = {}  # Deployment -> when its pods first all became available
        self.stuck_after_s = stuck_after_s
        self.interval_s = interval_s
        self.api = k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig(namespace)),
                                                     context=CONTEXT, persist_config=False)
        self.api.user_agent = CONTROLLERS_AGENT
        self.apps = k8s.AppsV1Api(self.api)
        self.core = k8s.CoreV1Api(self.api)
        self._first_seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="controllers", daemon=True)

    def start(self) -> Controllers:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.api.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except ApiException:
                pass  # an object deleted between list and patch: the next round sees it gone
            self._stop.wait(self.interval_s)

    def reconcile(self) -> None:
        for deployment in self.apps.list_namespaced_deployment(self.namespace).items:
            name = deployment.metadata.name
            desired = deployment.spec.replicas or 0
            image = deployment.spec.template.spec.containers[0].image
            self._first_seen.setdefault(name, time.monotonic())
            if image in self.crashing:
                status = self._crashing(deployment, desired)
            elif time.monotonic() - self._first_seen[name] < self.slow.get(image, 0.0):
                status = {"replicas": desired, "availableReplicas": 0, "updatedReplicas": desired,
                          "observedGeneration": 1}
            else:
                status = {"replicas": desired, "readyReplicas": desired, "availableReplicas": desired,
                          "updatedReplicas": desired, "observedGeneration": 1}
                self.available_at.setdefault(name, time.monotonic())
            if (deployment.status and deployment.status.to_dict() or {}).get("available_replicas") != \
                    status.get("availableReplicas") or image in self.crashing:
                self.apps.patch_namespaced_deployment_status(name, self.namespace, {"status": status})

    def _crashing(self, deployment: Any, desired: int) -> dict[str, Any]:
        name = deployment.metadata.name
        pod = f"{name}-7d9f-x2x4q"
        labels = dict(deployment.spec.selector.match_labels)
        try:
            self.core.read_namespaced_pod(pod, self.namespace)
        except ApiException:
            self.core.create_namespaced_pod(self.namespace, {
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "labels": labels},
                "spec": {"containers": [{"name": "app", "image": "x"}]}})
            self.core.patch_namespaced_pod_status(pod, self.namespace, {"status": {
                "phase": "Running", "containerStatuses": [{
                    "name": "app", "ready": False, "restartCount": 4, "image": "x", "imageID": "",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}})
            self.cluster.on_log(self.namespace, pod, "Traceback (most recent call last):\n"
                                                     "RuntimeError: DATABASE_URL is not set\n")
        status: dict[str, Any] = {"replicas": desired, "availableReplicas": 0, "updatedReplicas": desired,
                                  "unavailableReplicas": desired, "observedGeneration": 1}
        if time.monotonic() - self._first_seen[name] > self.stuck_after_s:
            status["conditions"] = [{"type": "Progressing", "status": "False",
                                     "reason": "ProgressDeadlineExceeded",
                                     "message": f'ReplicaSet "{name}-7d9f" has timed out progressing.'}]
        return status


@contextmanager
def mock_cluster(workdir: Path, namespace: str = "shop", *,
                 crashing: set[str] | None = None) -> Iterator[tuple[MockCluster, Controllers]]:
    """A running mock API and its controllers."""
    cluster = MockCluster(workdir).start()
    controllers = Controllers(cluster, namespace, crashing=crashing).start()
    try:
        yield cluster, controllers
    finally:
        controllers.stop()
        cluster.stop()
