"""The services the bot serves, across every repository in ``settings.repos``."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from orchestra.errors import OrchestraError
from orchestra.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class Catalog:
    """Service names from the repositories' configs, re-read at most every ``ttl_s`` seconds."""

    settings: Settings
    ttl_s: float = 30.0
    _names: list[str] = field(default_factory=list)
    _loaded_at: float = float("-inf")
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_settings(cls, settings: Settings, *, ttl_s: float = 30.0) -> Catalog:
        return cls(settings, ttl_s)

    def service_names(self) -> list[str]:
        """Every service name, in repository order; a broken repository is logged and skipped."""
        with self._lock:
            if time.monotonic() - self._loaded_at > self.ttl_s:
                self._names = self._load()
                self._loaded_at = time.monotonic()
            return list(self._names)

    def _load(self) -> list[str]:
        from orchestra.config import load_config
        from orchestra.repos import local_copy

        names: list[str] = []
        for repo in self.settings.repos:
            try:
                config = load_config(local_copy(repo, self.settings))
            except OrchestraError as exc:
                logger.warning("repository %s skipped: %s", repo, exc)
                continue
            names.extend(n for n in config.service_names() if n not in names)
        return names
