"""The service graph: unique names and ports, known dependencies, no cycles, deploy order."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from pydantic_core import PydanticCustomError

from orchestra.config.types import did_you_mean

if TYPE_CHECKING:
    from orchestra.config.model import ServiceConfig

# A problem found across fields: (location below `deployment.services`, message).
Problem = tuple[tuple[str | int, ...], str]
CROSS_CHECK = "cross_check"


def check_services(services: Sequence[ServiceConfig]) -> None:
    """Raise one validation error listing every problem of the service graph, each with its location."""
    problems = _duplicates(services) + _unknown_dependencies(services) + _cycles(services)
    if problems:
        text = "; ".join(f"services.{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems)
        raise PydanticCustomError(CROSS_CHECK, "{text}", {"text": text, "problems": problems})


def _duplicates(services: Sequence[ServiceConfig]) -> list[Problem]:
    problems: list[Problem] = []
    names: dict[str, int] = {}
    ports: dict[int, str] = {}
    for i, service in enumerate(services):
        if service.name in names:
            problems.append(((i, "name"), f"service `{service.name}` is already defined "
                                          f"(services.{names[service.name]})"))
        names.setdefault(service.name, i)
        if service.port in ports and ports[service.port] != service.name:
            problems.append(((i, "port"), f"port {service.port} is already used by service "
                                          f"`{ports[service.port]}`; give each service its own port"))
        ports.setdefault(service.port, service.name)
    return problems


def _unknown_dependencies(services: Sequence[ServiceConfig]) -> list[Problem]:
    known = [s.name for s in services]
    return [((i, "depends_on", k), f"unknown service `{dep}`{did_you_mean(dep, known)}")
            for i, service in enumerate(services)
            for k, dep in enumerate(service.depends_on) if dep not in known]


def _cycles(services: Sequence[ServiceConfig]) -> list[Problem]:
    graph = {s.name: [d for d in s.depends_on if d != ""] for s in services}
    index = {s.name: i for i, s in reversed(list(enumerate(services)))}
    problems: list[Problem] = []
    seen_cycles: set[frozenset[str]] = set()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in graph.get(name, []):
            if dep not in graph:
                continue
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                if frozenset(cycle) not in seen_cycles:
                    seen_cycles.add(frozenset(cycle))
                    problems.append(((index[cycle[0]], "depends_on"),
                                     f"dependency cycle: {' -> '.join(cycle)}"))
            elif dep not in state:
                visit(dep, path + [dep])
        state[name] = 2

    for service in services:
        if service.name not in state:
            visit(service.name, [service.name])
    return problems


def topological_order(services: Sequence[ServiceConfig], wanted: Sequence[str]) -> list[str]:
    """``wanted`` with dependencies (direct or through other services) before dependents; file order breaks ties."""
    graph: dict[str, list[str]] = {s.name: list(s.depends_on) for s in services}
    order: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        done.add(name)
        for dep in graph.get(name, []):
            visit(dep)
        order.append(name)

    for name in graph:
        visit(name)
    chosen = set(wanted)
    return [name for name in order if name in chosen]


def raw_graph_errors(data: dict[str, Any]) -> list[Any]:
    """Graph problems of not-yet-valid data, so they are reported together with the field errors."""
    deployment = data.get("deployment")
    services = deployment.get("services") if isinstance(deployment, dict) else None
    if not isinstance(services, list) or not all(isinstance(s, dict) for s in services):
        return []
    nodes = [SimpleNamespace(name=str(s.get("name", "")), port=s.get("port"),
                             depends_on=[str(d) for d in s.get("depends_on") or [] if isinstance(d, str | int)])
             for s in services]
    nodes_any: Any = nodes
    problems = _unknown_dependencies(nodes_any) + _cycles(nodes_any)
    return [{"type": CROSS_CHECK, "loc": ("deployment",), "ctx": {"problems": problems}}] if problems else []


def problems_of(error: dict[str, Any]) -> list[Problem]:
    """The per-location problems carried by a cross-check error (see :func:`check_services`)."""
    return list((error.get("ctx") or {}).get("problems", []))


def affected_services(files: Sequence[str], services: Mapping[str, str]) -> list[str]:
    """Services whose folder contains one of ``files`` (a service at the root takes everything)."""
    out = []
    for name, folder in services.items():
        prefix = folder.strip("/")
        if prefix in ("", ".") or any(f == prefix or f.startswith(prefix + "/") for f in files):
            out.append(name)
    return out
