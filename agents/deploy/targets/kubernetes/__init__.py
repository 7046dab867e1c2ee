"""The Kubernetes target: a Deployment per version, a Service, and an HTTPRoute when there is one."""
from agents.deploy.targets.kubernetes.target import KubernetesTarget

__all__ = ["KubernetesTarget"]
