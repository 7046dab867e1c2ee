"""Build one service: find or generate its Dockerfile, lint, build, push, measure."""
from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from redis import Redis

from agents.build.detect import detect_stack
from agents.build.dockerfile import Images, generate, lint
from agents.build.ecr import push_auth
from agents.build.image import build_image, context_tar, image_size, push_image, timed
from agents.build.refine import refine
from agents.findings import Finding, Severity
from orchestra.errors import StageFailed
from orchestra.llm import LLM
from orchestra.settings import Settings

logger = logging.getLogger(__name__)

SIZE_KEY = "orchestra:build:size:{repository}"  # last pushed size of an image repository, in bytes


@dataclass(frozen=True)
class ServiceSpec:
    """What the builder needs to know about a service."""

    name: str
    path: Path
    port: int = 5000
    health: str = "/health"
    dockerfile: str | None = None  # relative to ``path``; None: use ./Dockerfile or generate one


@dataclass
class BuildRequest:
    """Where the image goes and where generated files are kept."""

    project: str
    version: str  # the image tag: a short SHA, or a plain folder's content hash
    out_dir: Path
    images: Images = field(default_factory=Images)
    push: bool = True
    nocache: bool = False  # ignore the layer cache (a cold build)
    llm: LLM | None = None  # refines generated Dockerfiles when available
    run_id: str | None = None
    ref: str | None = None  # the branch or tag the version was asked for by, shown beside it


def repository_for(settings: Settings, project: str, service: str) -> str:
    name = re.sub(r"[^a-z0-9._-]+", "-", f"{project}-{service}".lower()).strip("-.")
    return f"{settings.registry}/{name}"


def build_service(client: docker.DockerClient, spec: ServiceSpec, request: BuildRequest, *,
                  settings: Settings, redis: Redis | None = None,
                  progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Build and push one service's image; StageFailed when lint, build or push says no."""
    ca = settings.build_ca_bundle
    if ca is not None and not ca.is_file():
        raise StageFailed(f"the build CA bundle {ca} does not exist",
                          hint="point ORCHESTRA_BUILD_CA_BUNDLE at a PEM file, e.g. "
                               "/etc/ssl/certs/ca-certificates.crt, or unset it")
    dockerfile, generated, stack, note = _dockerfile(spec, request, settings)
    saved = request.out_dir / spec.name / "Dockerfile"
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(dockerfile)
    findings = lint(dockerfile, file=f"{spec.name}/Dockerfile")
    blocking = [f for f in findings if f.severity is Severity.ERROR]
    if generated and blocking:  # a user's own Dockerfile is linted and reported, not blocked
        raise StageFailed(f"generated Dockerfile for {spec.name} fails hadolint: "
                          + "; ".join(f.one_line() for f in blocking))
    reason = detect_stack(spec.path).not_built_here if generated else None
    if reason:  # said plainly, instead of a build that fails on an unreachable registry
        raise StageFailed(f"{spec.name} ({stack}): Dockerfile generated and linted ({summarise(findings)}), "
                          f"saved at {saved}, but not built here: {reason}",
                          hint="Python, Node and standard-library Go services build here; give this one a "
                               "Dockerfile that builds from images this engine has, or build it elsewhere")
    repository = repository_for(settings, request.project, spec.name)
    ref = f"{repository}:{request.version}"
    progress(f"building {spec.name} ({stack}) as {ref}: {note}")  # said before a build that may fail
    context = context_tar(spec.path, dockerfile, ca_bundle=settings.build_ca_bundle)
    outcome, build_s = timed(lambda: build_image(client, context, ref, nocache=request.nocache))
    digest, push_s = (timed(lambda: push_image(client, repository, request.version,
                                               push_auth(settings.registry, repository)))
                      if request.push else ("", 0.0))
    size = image_size(client, ref)
    previous = _swap_size(redis, repository, size)
    return {
        "service": spec.name, "image": ref, "repository": repository, "version": request.version,
        "ref": request.ref, "digest": digest, "image_id": outcome.image_id, "stack": stack, "size": size,
        "previous_size": previous, "size_change": None if previous is None else size - previous,
        "dockerfile": dockerfile, "dockerfile_path": str(saved), "dockerfile_generated": generated,
        "dockerfile_note": note,
        "lint": [f.model_dump() for f in findings], "steps": outcome.steps,
        "cached_steps": outcome.cached_steps, "build_seconds": build_s, "push_seconds": push_s,
        "port": spec.port, "health": spec.health,
    }


def _dockerfile(spec: ServiceSpec, request: BuildRequest,
                settings: Settings) -> tuple[str, bool, str, str]:
    """(text, generated?, stack name, note): the service's own Dockerfile if it has one."""
    own = spec.path / (spec.dockerfile or "Dockerfile")
    if own.is_file():
        return own.read_text(), False, "dockerfile", f"the service's own {own.name}"
    if spec.dockerfile:
        raise StageFailed(f"{spec.name}: the configured dockerfile {own} does not exist")
    stack = detect_stack(spec.path)
    text = generate(stack, spec.path, service=spec.name, port=spec.port, health=spec.health,
                    images=request.images, ca_bundle=settings.build_ca_bundle is not None)
    refined = refine(text, service=spec.name, stack=stack.name, service_dir=spec.path, llm=request.llm,
                     run_id=request.run_id)
    return refined.text, True, stack.name, refined.note


def _swap_size(redis: Redis | None, repository: str, size: int) -> int | None:
    """Store this build's size and return the one before it."""
    if redis is None:
        return None
    previous = redis.getset(SIZE_KEY.format(repository=repository), str(size))
    return int(previous) if previous is not None else None


def summarise(findings: list[Finding]) -> str:
    return ", ".join(sorted({f.rule for f in findings})) or "clean"
