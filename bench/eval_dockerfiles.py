"""Evaluate Dockerfile generation per stack, templates only and with model refinement; prints a table.

    .venv/bin/python bench/eval_dockerfiles.py [--stack NAME ...] [--no-model] [--no-build] [--show]

``--show`` prints every Dockerfile used (to read what a model changed).

For every stack the generator supports, a small sample service (tests/support/sample_apps.py for
plain Python and Flask, bench/corpora/stacks/<name>/ for the others) is copied to a scratch folder,
its stack detected (agents.build.detect), a Dockerfile generated from the templates
(agents.build.dockerfile) and, on the model path, refined by the configured model
(agents.build.refine: a proposal is used only if it passes the same checks). Each Dockerfile is
linted with hadolint. When a Docker engine is reachable (DOCKER_HOST, or /var/run/docker.sock;
``scripts/up`` starts one) and every base image the Dockerfile names is already in it (builds never
pull), the image is built, run with host networking on a free loopback port and its /health polled;
otherwise the row says why it was not built. Images and containers made here are removed afterwards.
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import docker  # noqa: E402
from docker.errors import DockerException, ImageNotFound  # noqa: E402
from redis import Redis  # noqa: E402

from agents.build.detect import detect_stack  # noqa: E402
from agents.build.dockerfile import Images, generate, lint, template_for, template_names  # noqa: E402
from agents.build.image import build_image, context_tar, docker_client  # noqa: E402
from agents.build.refine import refine  # noqa: E402
from agents.deploy.targets.docker import DockerTarget  # noqa: E402
from agents.deploy.targets.state import Release  # noqa: E402
from agents.findings import Severity  # noqa: E402
from bench.eval_common import (  # noqa: E402
    CORPORA,
    Model,
    Usage,
    configured_model,
    eval_redis,
    measured,
    model_line,
    print_table,
    share,
)
from orchestra.errors import OrchestraError  # noqa: E402
from orchestra.settings import Settings  # noqa: E402
from tests.support.sample_apps import flask_app, plain_app  # noqa: E402
from tests.support.services import free_port  # noqa: E402

STACKS_DIR = CORPORA / "stacks"
HEALTH = "/health"
HEALTH_TIMEOUT_S = 60.0
SOCKET = Path("/var/run/docker.sock")
_FROM = re.compile(r"^\s*FROM\s+(\S+)(?:\s+AS\s+(\S+))?", re.IGNORECASE | re.MULTILINE)
COLUMNS = ("stack", "path", "generated", "lint ok", "built", "healthy", "note")
TOTALS = ("path", "generated", "model used", "lint ok", "built", "healthy", "model calls", "tokens", "time")


def _corpus_sample(name: str) -> Callable[[Path], Path]:
    def write(path: Path) -> Path:
        return Path(shutil.copytree(STACKS_DIR / name, path))
    return write


SAMPLES: dict[str, Callable[[Path], Path]] = {
    "python-plain": plain_app, "python-flask": flask_app,
    **{p.name: _corpus_sample(p.name) for p in sorted(STACKS_DIR.iterdir(), key=lambda p: (
        not p.name.startswith("python"), p.name)) if p.is_dir()},
}


@dataclass
class Outcome:
    """One stack on one path."""

    stack: str
    path: str
    generated: str = "no"
    lint_ok: bool = False
    built: str = "-"
    healthy: str = "-"
    note: str = ""
    dockerfile: str = ""

    def cells(self) -> tuple[str, ...]:
        return (self.stack, self.path, self.generated, "yes" if self.lint_ok else "no", self.built, self.healthy,
                self.note)


@dataclass(frozen=True)
class Engine:
    """The Docker engine to build on, or None and why not."""

    client: docker.DockerClient | None
    reason: str = ""
    short: str = "no engine"  # the table cell's reason


def engine(settings: Settings, *, wanted: bool) -> Engine:
    """A client on the configured engine when one answers (never starts one)."""
    if not wanted:
        return Engine(None, "--no-build given", short="--no-build")
    if not (settings.docker_host or SOCKET.exists()):
        return Engine(None, "no engine: DOCKER_HOST unset and no /var/run/docker.sock")
    try:
        client = docker_client(settings)
        client.ping()
    except (OrchestraError, DockerException) as exc:
        return Engine(None, f"no engine: {str(exc).splitlines()[0][:80]}")
    return Engine(client)


def generated(sample: str, scratch: Path, settings: Settings, model: Model, port: int) -> tuple[Outcome, str]:
    """The Dockerfile for ``sample`` on one path (template, or model-refined), linted; "" when none was made."""
    service = SAMPLES[sample](scratch / sample)
    path = "templates" if model.llm is None else "model refinement"
    try:
        stack = detect_stack(service)
        text = generate(stack, service, service=sample, port=port, health=HEALTH,
                        images=Images(python=settings.base_image), ca_bundle=settings.build_ca_bundle is not None)
        outcome = Outcome(stack.name, path, generated="template", dockerfile=text)
        if model.llm is not None:
            refined = refine(text, service=sample, stack=stack.name, service_dir=service, llm=model.llm,
                             run_id=f"eval-dockerfiles-{sample}")
            outcome.dockerfile, outcome.generated, outcome.note = refined.text, _source(refined.source), \
                refined.note
        blocking = sorted({f.rule for f in lint(outcome.dockerfile) if f.severity is Severity.ERROR})
    except (OrchestraError, KeyError) as exc:  # no stack, a template gap, or no hadolint
        return Outcome(sample, path, generated="no", note=str(exc).splitlines()[0][:120]), ""
    outcome.lint_ok = not blocking
    if blocking:
        outcome.note = "; ".join(filter(None, [outcome.note, "hadolint: " + ", ".join(blocking)]))
    return outcome, outcome.dockerfile


def built_and_healthy(outcome: Outcome, text: str, service: Path, engine: Engine, settings: Settings,
                      port: int) -> None:
    """Build the image and check its health when the engine and base images allow; say why not otherwise."""
    if engine.client is None:
        outcome.built = f"not built ({engine.short})"
        return
    missing = [image for image in base_images(text) if not _local(engine.client, image)]
    if missing:
        outcome.built = f"not built (no base image {', '.join(missing)})"
        return
    tag = f"orchestra-eval/{outcome.stack}:{'model' if outcome.path != 'templates' else 'template'}"
    try:
        build_image(engine.client, context_tar(service, text, ca_bundle=settings.build_ca_bundle), tag)
    except (OrchestraError, DockerException) as exc:
        outcome.built = "no"
        outcome.note = str(exc).splitlines()[0][:120]
        return
    outcome.built = "yes"
    try:
        outcome.healthy = f"yes ({_health_seconds(engine.client, tag, port):.1f}s)"
    except (OrchestraError, DockerException) as exc:
        outcome.healthy, outcome.note = "no", str(exc).splitlines()[0][:120]
    finally:
        with suppress(DockerException):
            engine.client.images.remove(tag, force=True)


def _health_seconds(client: docker.DockerClient, image: str, port: int) -> float:
    name = f"orchestra-eval-{port}"
    client.containers.run(image, name=name, detach=True, network_mode="host", init=True,
                          environment={"PORT": str(port), "HOST": "127.0.0.1", "APP_VERSION": "eval"})
    target = DockerTarget(client)
    try:
        return target.wait_healthy(Release(version="eval", image=image, port=port, container=name,
                                           run_id="eval-dockerfiles"), HEALTH, timeout=HEALTH_TIMEOUT_S)
    finally:
        target.remove(name)


def base_images(dockerfile: str) -> list[str]:
    """The images the Dockerfile builds FROM (not its own earlier stages)."""
    stages: set[str] = set()
    images = []
    for image, stage in _FROM.findall(dockerfile):
        if image not in stages and image not in images:
            images.append(image)
        if stage:
            stages.add(stage)
    return images


def _local(client: docker.DockerClient, image: str) -> bool:
    try:
        client.images.get(image)
    except ImageNotFound:
        return False
    return True


def _source(source: str) -> str:
    return "model" if source == "llm" else "template"


def run_path(samples: list[str], settings: Settings, model: Model, engine: Engine) -> list[Outcome]:
    """Every sample on one path, in a scratch folder removed afterwards."""
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="eval-dockerfiles-") as tmp:
        for sample in samples:
            port = free_port()
            outcome, text = generated(sample, Path(tmp), settings, model, port)
            if text:
                built_and_healthy(outcome, text, Path(tmp) / sample, engine, settings, port)
            outcomes.append(outcome)
            shutil.rmtree(Path(tmp) / sample, ignore_errors=True)
    return outcomes


def totals(path: str, outcomes: list[Outcome], used: Usage, seconds: float) -> tuple[str, ...]:
    """One path's counts over all stacks."""
    n = len(outcomes)
    used_model = share(sum(o.generated == "model" for o in outcomes), n) if used.calls else "-"
    return (path, share(sum(not o.generated.startswith("no") for o in outcomes), n), used_model,
            share(sum(o.lint_ok for o in outcomes), n), share(sum(o.built == "yes" for o in outcomes), n),
            share(sum(o.healthy.startswith("yes") for o in outcomes), n), str(used.calls), str(used.tokens),
            f"{seconds:.1f}s")


def evaluate(path: str, samples: list[str], settings: Settings, model: Model, docker_engine: Engine,
             redis: Redis) -> tuple[list[Outcome], tuple[str, ...]]:
    """One path over every sample, and its totals row (with the model calls, tokens and time)."""
    outcomes, used, seconds = measured(redis, lambda: run_path(samples, settings, model, docker_engine))
    return outcomes, totals(path, outcomes, used, seconds)


def main(argv: list[str] | None = None, *, settings: Settings | None = None) -> int:
    """Evaluate both paths for every sample; ``settings`` default to the environment's."""
    args = _arguments(argv)
    samples = args.stack or list(SAMPLES)
    with eval_redis(settings) as (local, redis):
        model = configured_model(local, redis, wanted=not args.no_model)
        docker_engine = engine(local, wanted=not args.no_build)
        try:
            results = [evaluate("templates", samples, local, Model(None), docker_engine, redis)]
            if model.llm is not None:
                results.append(evaluate("model refinement", samples, local, model, docker_engine, redis))
            line = model_line(model, redis)
        finally:
            if docker_engine.client is not None:
                docker_engine.client.close()
    _report(results, line, docker_engine)
    if args.show:
        for outcome in (o for outcomes, _ in results for o in outcomes if o.dockerfile):
            print(f"\n# --- {outcome.stack}, {outcome.path} ---\n{outcome.dockerfile}")
    return 0


def _report(results: list[tuple[list[Outcome], tuple[str, ...]]], line: str, docker_engine: Engine) -> None:
    print(line)
    print(f"engine: {'reachable' if docker_engine.client is not None else docker_engine.reason}")
    print()
    print_table(COLUMNS, [o.cells() for outcomes, _ in results for o in outcomes])
    print()
    print_table(TOTALS, [row for _, row in results])
    print("\nonly the Python stacks can build on this machine: their base image (Settings.base_image) is built "
          "locally by scripts/up; the node, golang, maven, gradle and temurin images are not pulled here, and "
          "builds never pull")
    missing = sorted(set(template_names()) - {template_for(detect_stack(STACKS_DIR / s))
                                              for s in SAMPLES if (STACKS_DIR / s).is_dir()} - {"python"})
    if missing:
        print(f"templates without a sample service: {', '.join(missing)}")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", action="append", choices=sorted(SAMPLES), help="only this sample (repeatable)")
    parser.add_argument("--no-model", action="store_true", help="templates only, even with a model configured")
    parser.add_argument("--no-build", action="store_true", help="generate and lint only")
    parser.add_argument("--show", action="store_true", help="print every Dockerfile used")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main())
