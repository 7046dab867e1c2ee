"""Lambda's own CloudWatch metrics of one published version invoked through the alias.

``Invocations``, ``Errors`` and ``Duration`` (milliseconds) carry the ``FunctionName``, ``Resource``
(``<function>:<alias>``) and ``ExecutedVersion`` dimensions, so the versions an alias splits traffic
between are told apart. The canary judge (target.py) compares two of them; the watch after a full
release (agents/observability/sources.py) reads the one that holds the alias.
"""
from __future__ import annotations

import datetime as dt

from agents.deploy.targets.ecs.aws import Aws
from agents.deploy.targets.ecs.metrics import Sample, sample_of

NAMESPACE = "AWS/Lambda"


def version_sample(aws: Aws, function: str, alias: str, number: str, start: dt.datetime,
                   end: dt.datetime) -> Sample:
    """Invocations, errors and Duration p99 (in seconds) of version ``number`` through ``alias``."""
    dims = [{"Name": "FunctionName", "Value": function},
            {"Name": "Resource", "Value": f"{function}:{alias}"},
            {"Name": "ExecutedVersion", "Value": number}]
    return sample_of(aws, NAMESPACE, dims, start, end, requests="Invocations", errors="Errors",
                     latency="Duration", latency_to_s=0.001)
