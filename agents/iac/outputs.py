"""The applied Terraform's outputs: what the deploy may read, and what never leaves the worker.

``terraform output -json`` gives every output with its ``sensitive`` flag. The non-sensitive ones
(cluster, listener and target-group ARNs, URLs) go into the ``iac_ready`` event and onto the run; a
sensitive one is named, never shown, and its value is held for redaction so that no later message
(a failure, a log line) can carry it either. The state itself is never read here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from agents.iac.checks import last_error
from agents.iac.terraform import Terraform
from orchestra.errors import StageFailed
from orchestra.redaction import hold, redact_data

MAX_OUTPUTS_CHARS = 20_000  # what the event carries; a larger set is cut, with the names of the rest


@dataclass
class Outputs:
    """The outputs an apply left: the shown values by name, and the names of the withheld ones."""

    values: dict[str, Any] = field(default_factory=dict)
    sensitive: list[str] = field(default_factory=list)

    def line(self) -> str:
        shown = ", ".join(sorted(self.values)) or "none"
        withheld = f"; sensitive, not shown: {', '.join(sorted(self.sensitive))}" if self.sensitive else ""
        return f"outputs: {shown}{withheld}"


def read(tf: Terraform) -> Outputs:
    """``terraform output -json`` in ``tf``'s folder, split into shown and withheld outputs."""
    done = tf.run("output", "-json", "-no-color", timeout=120)
    if done.returncode != 0:
        raise StageFailed(f"the plan was applied, but `{tf.name} output` failed: {last_error(done.stderr)}",
                          hint="run the deploy again once the outputs can be read; the state holds what was made")
    try:
        raw = json.loads(done.stdout or "{}")
    except ValueError as exc:
        raise StageFailed(f"`{tf.name} output -json` did not answer with JSON") from exc
    return split(raw)


def split(raw: dict[str, Any]) -> Outputs:
    """Shown and withheld outputs from ``terraform output -json``'s document."""
    found = Outputs()
    room = MAX_OUTPUTS_CHARS
    for name, output in sorted(raw.items()):
        if not isinstance(output, dict):
            continue
        if output.get("sensitive"):
            _hold(output.get("value"))
            found.sensitive.append(name)
            continue
        value = redact_data(output.get("value"))
        size = len(json.dumps(value, default=str))
        found.values[name] = value if size <= room else "(too long for the event)"
        room -= min(size, room)
    return found


def _hold(value: Any) -> None:
    """Every string inside a sensitive output, held so that redaction replaces it wherever it appears."""
    if isinstance(value, str):
        hold(value)
    elif isinstance(value, dict):
        for item in value.values():
            _hold(item)
    elif isinstance(value, list):
        for item in value:
            _hold(item)
    elif value is not None:
        hold(str(value))
