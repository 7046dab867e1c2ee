"""Prompt templates: one file per task in ``prompts/``, loaded by name with explicit variables.

A prompt file is YAML front matter followed by the user message template::

    ---
    version: 2
    description: what the prompt is for
    variables: [diff, files]
    untrusted: [diff]          # fenced as data and never read as instructions
    system: |
      You review code changes ...
    ---
    Changed files: {{files}}
    {{diff}}

Placeholders are ``{{name}}``. Loading fails when the template uses a variable the header does not
declare (or the other way round); rendering fails when a declared variable is missing or extra.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from orchestra.errors import OrchestraError
from orchestra.settings import PROJECT_ROOT

PROMPTS_DIR = PROJECT_ROOT / "prompts"
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class PromptError(OrchestraError):
    """A prompt file that does not exist, does not parse, or is used with the wrong variables."""


@dataclass(frozen=True)
class Rendered:
    """A prompt with its variables filled in, ready to send."""

    name: str
    version: str
    system: str
    user: str


@dataclass(frozen=True)
class Prompt:
    """A loaded prompt template."""

    name: str
    version: str
    description: str
    system: str
    template: str
    variables: frozenset[str]
    untrusted: frozenset[str]

    def render(self, variables: Mapping[str, object], *,
               fence: Callable[[str, str], str] | None = None) -> Rendered:
        """Fill in every declared variable; ``fence(name, text)`` wraps the untrusted ones."""
        given = set(variables)
        if given != self.variables:
            missing, extra = sorted(self.variables - given), sorted(given - self.variables)
            raise PromptError(
                f"prompt {self.name!r} v{self.version}: missing variables {missing}, unexpected {extra}",
                hint=f"pass exactly {sorted(self.variables)}")
        values = {k: str(v) for k, v in variables.items()}
        if fence is not None:
            values.update({k: fence(k, values[k]) for k in self.untrusted})

        def fill(text: str) -> str:
            return PLACEHOLDER.sub(lambda m: values[m.group(1)], text)

        return Rendered(self.name, self.version, fill(self.system), fill(self.template))


def load_prompt(name: str, directory: Path = PROMPTS_DIR) -> Prompt:
    """Load ``prompts/<name>.md``; raise PromptError with what is wrong."""
    return _load(name, directory)


@lru_cache(maxsize=64)
def _load(name: str, directory: Path) -> Prompt:
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise PromptError(f"bad prompt name {name!r}", hint="use lower-case letters, digits and _")
    path = directory / f"{name}.md"
    if not path.is_file():
        known = sorted(p.stem for p in directory.glob("*.md"))
        raise PromptError(f"no prompt named {name!r} in {directory}", hint=f"known prompts: {known}")
    header, template = _split(path)
    for key in ("version", "variables", "system"):
        if key not in header:
            raise PromptError(f"{path}: the header has no `{key}`", hint="see orchestra/prompts.py")
    variables = frozenset(header["variables"] or [])
    untrusted = frozenset(header.get("untrusted") or [])
    system = str(header["system"])
    used = set(PLACEHOLDER.findall(template)) | set(PLACEHOLDER.findall(system))
    if used != variables or not untrusted <= variables:
        raise PromptError(
            f"{path}: placeholders {sorted(used)} do not match declared variables {sorted(variables)}"
            f" (untrusted: {sorted(untrusted)})", hint="declare every {{variable}} the prompt uses")
    return Prompt(name, str(header["version"]), str(header.get("description", "")), system,
                  template.strip() + "\n", variables, untrusted)


def _split(path: Path) -> tuple[dict, str]:
    text = path.read_text(encoding="utf-8")
    parts = text.split("---\n", 2)
    if len(parts) != 3 or parts[0].strip():
        raise PromptError(f"{path}: expected YAML front matter between two `---` lines")
    try:
        header = yaml.safe_load(parts[1]) or {}
    except yaml.YAMLError as exc:
        raise PromptError(f"{path}: the header is not valid YAML: {exc}") from exc
    if not isinstance(header, dict):
        raise PromptError(f"{path}: the header must be a mapping")
    return header, parts[2]
