"""devops_orchestra.yaml: the typed model, the loader with line numbers, and inference from a repository."""
from __future__ import annotations

from orchestra.config.environments import (
    ENV_ALIASES,
    EnvironmentPolicy,
    Environments,
    FreezeWindow,
    canonical_env,
)
from orchestra.config.infer import infer_config, infer_defaults
from orchestra.config.loader import config_path, load_config, load_file, parse_config, validate_file
from orchestra.config.model import (
    CONFIG_FILENAME,
    Alert,
    Canary,
    Deployment,
    ProjectConfig,
    RollbackThreshold,
    ServiceConfig,
)
from orchestra.config.types import did_you_mean, parse_duration, parse_percent

__all__ = [
    "CONFIG_FILENAME", "ENV_ALIASES", "Alert", "Canary", "Deployment", "EnvironmentPolicy", "Environments",
    "FreezeWindow", "ProjectConfig", "RollbackThreshold", "ServiceConfig", "canonical_env", "config_path",
    "did_you_mean", "infer_config", "infer_defaults", "load_config", "load_file", "parse_config",
    "parse_duration", "parse_percent", "validate_file",
]
