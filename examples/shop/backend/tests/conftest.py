"""Load the service's app module by name (it sits next to tests/, on pytest's pythonpath)."""
from __future__ import annotations

import importlib

import pytest


@pytest.fixture(scope="session")
def shop_app():
    """The app module: create_app() and its metrics."""
    return importlib.import_module("app")
