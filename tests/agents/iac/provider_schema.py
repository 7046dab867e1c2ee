"""The google and azurerm providers' resource schemas, for checking generated Terraform where those providers
cannot be installed (only the AWS provider is in this machine's mirror, so ``terraform validate`` cannot run).

The schema comes from PyPI: the prebuilt cdktf bindings of each provider (``cdktf-cdktf-provider-google``
16.12.1 is hashicorp/google 6.50.0, ``cdktf-cdktf-provider-azurerm`` 14.23.1 is hashicorp/azurerm 4.55.0)
carry a jsii assembly describing every resource's arguments and nested blocks, which required. The wheel is
kept in ~/.cache/orchestra/wheels as scripts/terraform-mirror keeps its own, and the types of the resources
checked are kept beside it, so only the first run downloads (45-50 MB each) and reads the 90 MB assembly.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

WHEELS = Path.home() / ".cache" / "orchestra" / "wheels"
PACKAGES = {"google": ("cdktf-cdktf-provider-google", "16.12.1"),
            "azurerm": ("cdktf-cdktf-provider-azurerm", "14.23.1")}
META = {"for_each", "count", "depends_on", "provider", "lifecycle"}
NOT_ARGUMENTS = {"forEach", "count", "dependsOn", "provider", "lifecycle", "connection", "provisioners"}


class Unreachable(Exception):
    """PyPI could not be reached for the bindings."""


def types(provider: str, modules: set[str]) -> dict[str, dict[str, bool]]:
    """Struct name -> {argument or block (camelCase) -> required} for the resources of ``modules``."""
    package, version = PACKAGES[provider]
    kept = WHEELS / f"{package}-{version}-schema.json"
    if kept.is_file():
        known = json.loads(kept.read_text())
        if modules <= set(known["modules"]):
            return dict(known["types"])
    wheel = _wheel(package, version)
    with zipfile.ZipFile(wheel) as whl:
        inner = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with whl.open(inner) as tgz, tarfile.open(fileobj=tgz, mode="r|gz") as tar:
            member = next(m for m in tar if m.name.endswith("/.jsii"))
            assembly = json.load(tar.extractfile(member))  # type: ignore[arg-type]
    everything = assembly["types"]
    found = {fqn.rsplit(".", 1)[-1]: _properties(everything, t) for fqn, t in everything.items()
             if fqn.split(".")[1:2] and fqn.split(".")[1] in modules and t.get("kind") == "interface"}
    part = kept.with_suffix(f".{os.getpid()}.part")  # its own file, renamed whole: another session reads all or none
    part.write_text(json.dumps({"modules": sorted(modules), "types": found}))
    part.replace(kept)
    return found


def _wheel(package: str, version: str) -> Path:
    pattern = f"{package.replace('-', '_')}-{version}-*.whl"
    for path in WHEELS.glob(pattern):
        return path
    WHEELS.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                           "-d", str(WHEELS), f"{package}=={version}"], capture_output=True, text=True, timeout=600,
                          check=False)
    if done.returncode != 0:
        raise Unreachable(done.stderr.strip()[-300:])
    return next(WHEELS.glob(pattern))


def _properties(everything: dict[str, Any], struct: dict[str, Any]) -> dict[str, bool]:
    found = {p["name"]: not p.get("optional") for p in struct.get("properties", [])}
    for parent in struct.get("interfaces", []):
        if parent in everything:
            found.update(_properties(everything, everything[parent]))
    return found


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def pascal(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def module(resource_type: str) -> str:
    """``google_cloud_run_service`` -> ``cloudRunService``, the bindings' submodule."""
    return camel(resource_type.split("_", 1)[1])


def problems(text: str, schema: dict[str, dict[str, bool]]) -> list[str]:
    """Each argument or block of each ``resource`` in ``text`` the schema does not know, and each required
    one left out. Reads Terraform as ``terraform fmt`` lays it out (one argument or block opening a line)."""
    used: dict[tuple[str, tuple[str, ...]], set[str]] = {}
    for resource_type, path, name in _walk(text):
        used.setdefault((resource_type, path), set()).add(camel(name))
    found = []
    for (resource_type, path), names in sorted(used.items()):
        struct = schema.get(_struct(resource_type, path))
        where = f"{resource_type} {'.'.join(path)}".strip()
        if struct is None:
            found.append(f"{where}: no such resource or block")
            continue
        found += [f"{where}: unknown {name}" for name in sorted(names - NOT_ARGUMENTS - set(struct))]
        found += [f"{where}: required {name} missing" for name, required in struct.items()
                  if required and name not in names and name not in NOT_ARGUMENTS]
    return found


def _struct(resource_type: str, path: tuple[str, ...]) -> str:
    base = pascal(resource_type.split("_", 1)[1])
    return base + "".join(pascal(p) for p in path) if path else base + "Config"


def _walk(text: str) -> list[tuple[str, tuple[str, ...], str]]:
    """(resource type, nested block path, argument or block name) for everything inside each resource."""
    out: list[tuple[str, tuple[str, ...], str]] = []
    stack: list[list[str]] = []  # [kind, name]; a "map" value counts its open braces in name
    for raw in text.splitlines():
        line = raw.split("#")[0].strip()
        if not line:
            continue
        if stack and stack[-1][0] == "map":
            stack[-1][1] = str(int(stack[-1][1]) + line.count("{") - line.count("}"))
            if int(stack[-1][1]) <= 0:
                stack.pop()
            continue
        if line.startswith("}"):
            stack.pop()
            continue
        resource = stack[0][1] if stack and stack[0][0] == "resource" else ""
        path = tuple(name for kind, name in stack[1:] if kind in ("block", "dynamic"))
        inside = bool(resource) and "lifecycle" not in path
        if m := re.match(r'^(resource|data|variable|output|provider|module|locals|terraform)( "[^"]+")*\s*\{$', line):
            stack.append(["resource" if m.group(1) == "resource" else "other",
                          line.split('"')[1] if '"' in line else m.group(1)])
        elif m := re.match(r'^dynamic "([a-z_0-9]+)" \{$', line):
            stack.append(["dynamic", m.group(1)])
            if inside:
                out.append((resource, path, m.group(1)))
        elif m := re.match(r"^([a-z_0-9]+) \{$", line):
            kind = "content" if m.group(1) == "content" and stack and stack[-1][0] == "dynamic" else "block"
            stack.append([kind, m.group(1)])
            if inside and kind == "block" and m.group(1) != "lifecycle":
                out.append((resource, path, m.group(1)))
        elif m := re.match(r'^"?([A-Za-z_0-9.\-/]+)"?\s*=\s*(.*)$', line):
            if inside and stack[-1][0] != "dynamic" and not (m.group(1) in META and not path):
                out.append((resource, path, m.group(1)))
            if m.group(2).endswith("{"):
                stack.append(["map", "1"])
    return out
