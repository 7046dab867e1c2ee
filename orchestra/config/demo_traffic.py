"""``environments.<env>.demo_traffic``: background requests so canary analysis has data in a demo environment.

While a run deploys to (and watches) an environment that sets it, the observability agent sends
``rps`` GET requests a second to ``path`` on each of the run's services, through the service's edge
on 127.0.0.1 (never anywhere else: the host is not configurable). See agents/observability/traffic.py.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator

MAX_RPS = 50.0  # per service; a demo needs a few requests a second, not a load test


class DemoTraffic(BaseModel):
    """How much background traffic each of a run's services gets, and where on its edge."""

    model_config = ConfigDict(extra="forbid")

    rps: float
    path: str = "/"

    @field_validator("rps", mode="before")
    @classmethod
    def _bounded_rate(cls, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"`{value}` is not a number of requests per second; write e.g. `rps: 5`")
        if not 0 < value <= MAX_RPS:
            raise ValueError(f"{value} requests/s is out of range; demo traffic takes more than 0 and at most "
                             f"{MAX_RPS:g} requests per second per service")
        return float(value)

    @field_validator("path")
    @classmethod
    def _edge_path(cls, value: str) -> str:
        if not value.startswith("/") or value.startswith("//") or len(value) > 200 \
                or any(c.isspace() or ord(c) < 32 or ord(c) == 127 or c in "#\\" for c in value):
            raise ValueError(f"`{value}` is not a path on the service; write one starting with a single '/', "
                             "e.g. / or /api/items (the host is always the service's edge on 127.0.0.1)")
        return value
