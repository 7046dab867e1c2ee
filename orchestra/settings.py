"""Process settings: the one place that reads the environment.

Each entry point calls :func:`Settings.from_env` once and passes the frozen
object down; no other module looks at ``os.environ``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REPO = PROJECT_ROOT / "examples" / "shop"
# Variables a tool run on users' code (pip, pytest, git, docker) may see: never tokens or keys.
TOOL_ENV_NAMES = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PIP_CERT", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL",
                  "PIP_FIND_LINKS", "PIP_DEFAULT_TIMEOUT", "PIP_DISABLE_PIP_VERSION_CHECK", "SSL_CERT_FILE",
                  "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "HTTP_PROXY",
                  "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to know about its surroundings."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    workdir: Path = Path.home() / ".orchestra"
    cache_dir: Path | None = None  # virtualenvs and clones shared across runs; default workdir/cache
    repos: tuple[str, ...] = (str(DEFAULT_REPO),)
    # Slack: without tokens the bot talks to the local workspace server.
    slack_bot_token: str | None = None
    slack_app_token: str | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_channel: str = "#devops-orchestra"
    # Anthropic: without a key every caller takes its deterministic path.
    anthropic_api_key: str | None = None
    anthropic_base_url: str | None = None
    anthropic_model: str = "claude-sonnet-4-6"
    llm_run_token_budget: int = 200_000
    llm_daily_token_budget: int = 2_000_000
    llm_run_budget_usd: float | None = None
    llm_daily_budget_usd: float | None = None
    # GitHub
    github_webhook_secret: str | None = None
    github_token: str | None = None
    github_api_url: str = "https://api.github.com"
    # Build and deploy
    docker_host: str | None = None  # the Docker engine; default the docker library's (local socket)
    registry: str = "127.0.0.1:5050"
    prometheus_url: str = "http://127.0.0.1:9090"  # where the observe agent reads metrics
    base_image: str = "orchestra-base:bookworm"
    build_ca_bundle: Path | None = None
    dev_mode: bool = False
    tool_env: Mapping[str, str] = field(default_factory=lambda: {"PATH": "/usr/bin:/bin"})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``ORCHESTRA_*``, ``SLACK_*``, ``ANTHROPIC_*`` and ``GITHUB_*`` variables."""
        env = os.environ if environ is None else environ
        defaults = cls()
        repos = tuple(r.strip() for r in env.get("ORCHESTRA_REPOS", "").split(",") if r.strip())
        ca = env.get("ORCHESTRA_BUILD_CA_BUNDLE")
        return cls(
            redis_url=env.get("REDIS_URL", defaults.redis_url),
            workdir=Path(env.get("ORCHESTRA_WORKDIR", str(defaults.workdir))),
            cache_dir=Path(env["ORCHESTRA_CACHE_DIR"]) if env.get("ORCHESTRA_CACHE_DIR") else None,
            repos=repos or defaults.repos,
            slack_bot_token=env.get("SLACK_BOT_TOKEN") or None,
            slack_app_token=env.get("SLACK_APP_TOKEN") or None,
            slack_api_url=env.get("SLACK_API_URL", defaults.slack_api_url),
            slack_channel=env.get("ORCHESTRA_SLACK_CHANNEL", defaults.slack_channel),
            anthropic_api_key=env.get("ANTHROPIC_API_KEY") or None,
            anthropic_base_url=env.get("ANTHROPIC_BASE_URL") or None,
            anthropic_model=env.get("ORCHESTRA_LLM_MODEL", defaults.anthropic_model),
            llm_run_token_budget=int(env.get("ORCHESTRA_LLM_RUN_TOKENS", defaults.llm_run_token_budget)),
            llm_daily_token_budget=int(env.get("ORCHESTRA_LLM_DAILY_TOKENS", defaults.llm_daily_token_budget)),
            llm_run_budget_usd=_float(env.get("ORCHESTRA_LLM_RUN_USD")),
            llm_daily_budget_usd=_float(env.get("ORCHESTRA_LLM_DAILY_USD")),
            github_webhook_secret=env.get("GITHUB_WEBHOOK_SECRET") or None,
            github_token=env.get("GITHUB_TOKEN") or None,
            github_api_url=env.get("GITHUB_API_URL", defaults.github_api_url),
            docker_host=env.get("DOCKER_HOST") or None,
            registry=env.get("ORCHESTRA_REGISTRY", defaults.registry),
            prometheus_url=env.get("ORCHESTRA_PROMETHEUS_URL", defaults.prometheus_url),
            base_image=env.get("ORCHESTRA_BASE_IMAGE", defaults.base_image),
            build_ca_bundle=Path(ca) if ca else None,
            dev_mode=env.get("ORCHESTRA_DEV", "") in ("1", "true", "yes"),
            tool_env={k: env[k] for k in TOOL_ENV_NAMES if k in env},
        )

    @property
    def cache(self) -> Path:
        """Where virtualenvs and clones shared across runs live."""
        return self.cache_dir or self.workdir / "cache"

    def run_dir(self, run_id: str) -> Path:
        """Where a run keeps its files: its checkout, generated artifacts, reports."""
        return self.workdir / "runs" / run_id

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields changed (tests and sub-processes)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def _float(value: str | None) -> float | None:
    return float(value) if value else None
