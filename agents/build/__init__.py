"""The build agent: one image per service, Dockerfile generated when missing, pushed to the registry.

The stage's result carries, per service, the image reference, digest, size and its change, the
Dockerfile used (generated ones are saved under the run's folder and shown, never committed).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker

from agents.build.dockerfile import Images
from agents.build.image import docker_client
from agents.build.service import BuildRequest, ServiceSpec, build_service
from agents.context import AgentContext, StageResult
from orchestra.errors import OrchestraError
from orchestra.llm import LLM
from orchestra.repos import ref_beside, short_sha, source_version

logger = logging.getLogger(__name__)

__all__ = ["run", "build_service", "ServiceSpec", "BuildRequest", "services_of", "version_of", "ref_of"]


def run(ctx: AgentContext, *, client: docker.DockerClient | None = None, nocache: bool = False) -> StageResult:
    """Build every service of the run (or of the configuration) and push it."""
    specs = services_of(ctx)
    version, ref = version_of(ctx), ref_of(ctx)
    request = BuildRequest(project=ctx.config.project.name, version=version, ref=ref,
                           out_dir=build_dir(ctx), images=images_of(ctx), nocache=nocache,
                           llm=LLM.from_settings(ctx.settings, redis=ctx.redis, bus=ctx.bus),
                           run_id=ctx.run.id)
    own_client = client is None
    client = client or docker_client(ctx.settings)
    built: list[dict[str, Any]] = []
    try:
        for spec in specs:
            ctx.progress(f"building {spec.name}", service=spec.name, stage="build")
            try:
                result = build_service(client, spec, request, settings=ctx.settings, redis=ctx.redis,
                                       progress=_progress(ctx, spec.name))
            except OrchestraError as exc:
                logger.info("run %s: build of %s failed: %s", ctx.run.id, spec.name, exc)
                return StageResult(False, f"build of {spec.name} failed: {exc.message}",
                                   {"images": {b["service"]: b for b in built}, "failed": spec.name,
                                    "error": str(exc)})
            built.append(result)
            ctx.progress(_line(result), service=spec.name, image=result["image"], size=result["size"])
    finally:
        if own_client:
            client.close()
    return StageResult(True, f"built {len(built)} image(s): " + ", ".join(b["image"] for b in built),
                       {"images": {b["service"]: b for b in built}, "version": version, "ref": ref,
                        "order": [b["service"] for b in built]})


def _progress(ctx: AgentContext, service: str) -> Callable[[str], None]:
    def progress(message: str) -> None:
        ctx.progress(message, service=service)
    return progress


def services_of(ctx: AgentContext) -> list[ServiceSpec]:
    """The run's services (all configured ones when the run names none), dependencies first."""
    config = ctx.config
    names = config.deploy_order(ctx.run.services or None)
    specs = []
    for name in names:
        service = config.service(name)
        specs.append(ServiceSpec(name=name, path=ctx.workspace / (service.path or "."), port=service.port,
                                 health=service.health, dockerfile=service.dockerfile))
    return specs


def version_of(ctx: AgentContext) -> str:
    """The image tag: the checkout's short SHA, or a plain folder's ``src-`` content hash.

    Only the SHA, never the ref: a ref moves and may hold characters a tag may not, and the same
    commit asked for by two names is the same image (and the same release to roll back to).
    """
    return short_sha(ctx.run.commit) if ctx.run.commit else source_version(ctx.workspace)


def ref_of(ctx: AgentContext) -> str | None:
    """The ref the run asked for, shown beside the version; None when it is the commit itself."""
    return ref_beside(ctx.run.ref, ctx.run.commit)


def images_of(ctx: AgentContext) -> Images:
    base = ctx.config.build.base_image or ctx.settings.base_image
    return Images(python=base, node=ctx.settings.node_base_image, go=ctx.settings.go_base_image)


def build_dir(ctx: AgentContext) -> Path:
    return ctx.settings.workdir / "runs" / ctx.run.id / "build"


def _line(result: dict[str, Any]) -> str:
    size_mb = result["size"] / 1e6
    change = result["size_change"]
    delta = "" if change is None else f" ({change / 1e6:+.1f} MB)"
    origin = result["dockerfile_note"]
    return (f"{result['service']}: {result['image']} {size_mb:.1f} MB{delta}, {origin}, "
            f"{result['cached_steps']}/{result['steps']} steps cached, build {result['build_seconds']}s, "
            f"push {result['push_seconds']}s")
