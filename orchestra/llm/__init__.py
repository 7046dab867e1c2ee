"""The LLM layer: one client (:mod:`orchestra.llm.client`) over two wire protocols, with budgets.

``from orchestra.llm import LLM`` is all a caller needs; see the client's docstring for the contract.
"""
from orchestra.llm.client import LLM, NO_RUN, SKIP_NO_MODEL, LLMError, LLMFailed, LLMSkipped

__all__ = ["LLM", "NO_RUN", "SKIP_NO_MODEL", "LLMError", "LLMFailed", "LLMSkipped"]
