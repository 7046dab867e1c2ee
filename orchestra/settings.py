"""Process settings: the one place that reads the environment.

Each entry point calls :func:`Settings.from_env` once and passes the frozen
object down; no other module looks at ``os.environ``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestra.errors import OrchestraError
from orchestra.logs import LOG_FORMATS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REPO = PROJECT_ROOT / "examples" / "shop"
# Variables a tool run on users' code (pip, pytest, git, docker) may see: never tokens or keys.
TOOL_ENV_NAMES = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PIP_CERT", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL",
                  "PIP_FIND_LINKS", "PIP_DEFAULT_TIMEOUT", "PIP_DISABLE_PIP_VERSION_CHECK", "SSL_CERT_FILE",
                  "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "HTTP_PROXY",
                  "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")

LLM_PROTOCOLS = ("anthropic", "openai")
SANDBOXES = ("docker", "none")
MIN_GIVE_UP_S = 5.0  # above /healthz's 3 s for a silent Redis, so it says unwell first
SENTINEL_HINT = ("with Redis Sentinel set REDIS_SENTINELS=HOST:PORT,HOST:PORT (the sentinels, usually three), "
                 "REDIS_MASTER_NAME=NAME (as in `sentinel monitor NAME ...`), REDIS_SENTINEL_PASSWORD (the "
                 "sentinels' requirepass) and REDIS_URL without a host: redis://:PASSWORD@/0 "
                 "(README, \"Redis failover\")")


@dataclass(frozen=True)
class RedisSentinel:
    """Where Redis Sentinel says the master is: the sentinels, the master's name, the sentinels' password.

    REDIS_URL then gives only the master's credentials, database and TLS (``rediss://``).
    """

    addresses: tuple[tuple[str, int], ...]
    master_name: str
    password: str | None = None


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to know about its surroundings."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_sentinel: RedisSentinel | None = None  # REDIS_SENTINELS, REDIS_MASTER_NAME, REDIS_SENTINEL_PASSWORD
    workdir: Path = Path.home() / ".orchestra"
    cache_dir: Path | None = None  # virtualenvs and clones shared across runs; default workdir/cache
    repos: tuple[str, ...] = (str(DEFAULT_REPO),)
    # Slack: without tokens the bot talks to the local workspace server.
    slack_bot_token: str | None = None
    slack_app_token: str | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_channel: str = "#devops-orchestra"
    # The model: Anthropic's API with a key, or any server speaking the Anthropic or OpenAI protocol at
    # llm_url (Ollama, llama.cpp, vLLM, LM Studio, TGI). Without either, every caller takes its
    # deterministic path.
    llm_protocol: str = "anthropic"  # anthropic | openai
    llm_url: str | None = None
    llm_api_key: str | None = None
    llm_model: str = "claude-sonnet-4-6"
    llm_model_fast: str | None = None  # chat understanding; default llm_model
    llm_price: tuple[float, float] | None = None  # USD per million tokens (in, out); None: see from_env
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
    node_base_image: str = "orchestra-node:bookworm"  # Node services build on it (scripts/build-node-base-image)
    go_base_image: str = "orchestra-go:bookworm"  # Go services build in it (scripts/build-go-base-image)
    build_ca_bundle: Path | None = None
    dev_mode: bool = False
    # Where a service's code (its install, tests, generated tests) runs: "docker" (a container per run,
    # agents/testing/sandbox.py) or "none" (this host, next to this process's credentials)
    sandbox: str = "docker"
    # Who may deploy and approve, from a file the operator controls instead of each repository's default branch
    policy_file: Path | None = None
    # Where secrets.manager `env` reads secrets.keys (KEY=value lines) instead of this process's environment
    secrets_file: Path | None = None
    # The process's own signals: log lines as text or JSON; /metrics on 127.0.0.1 (the bot on this port,
    # a worker on the next one; the webhook receiver on its own port)
    log_format: str = "text"  # text | json
    metrics_port: int = 9464
    metrics_host: str = "127.0.0.1"  # where the bot and workers serve /metrics (0.0.0.0 in a container)
    # How long the bot, a worker or the webhook receiver goes on without Redis answering, or with one of its
    # loops failing every try, before it exits with code 75 for its supervisor to start it afresh
    give_up_s: float = 300.0
    tool_env: Mapping[str, str] = field(default_factory=lambda: {"PATH": "/usr/bin:/bin"})
    # Where Terraform gets its providers: a CLI configuration of the operator's own (TF_CLI_CONFIG_FILE, used
    # when the file exists), else a filesystem mirror directory (scripts/terraform-mirror lays one out), else
    # the public registry
    terraform_cli_config: Path | None = None
    terraform_mirror: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``ORCHESTRA_*``, ``SLACK_*``, ``ANTHROPIC_*`` and ``GITHUB_*`` variables."""
        env = os.environ if environ is None else environ
        defaults = cls()
        repos = tuple(r.strip() for r in env.get("ORCHESTRA_REPOS", "").split(",") if r.strip())
        ca = env.get("ORCHESTRA_BUILD_CA_BUNDLE")
        sentinel = _sentinel(env)
        return cls(
            redis_url=_redis_url(env.get("REDIS_URL", "redis:///0" if sentinel else defaults.redis_url),
                                 sentinels=sentinel is not None),
            redis_sentinel=sentinel,
            workdir=Path(env.get("ORCHESTRA_WORKDIR", str(defaults.workdir))),
            cache_dir=Path(env["ORCHESTRA_CACHE_DIR"]) if env.get("ORCHESTRA_CACHE_DIR") else None,
            repos=repos or defaults.repos,
            slack_bot_token=env.get("SLACK_BOT_TOKEN") or None,
            slack_app_token=env.get("SLACK_APP_TOKEN") or None,
            slack_api_url=env.get("SLACK_API_URL", defaults.slack_api_url),
            slack_channel=env.get("ORCHESTRA_SLACK_CHANNEL", defaults.slack_channel),
            **_llm(env, defaults),
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
            node_base_image=env.get("ORCHESTRA_NODE_BASE_IMAGE") or defaults.node_base_image,
            go_base_image=env.get("ORCHESTRA_GO_BASE_IMAGE") or defaults.go_base_image,
            build_ca_bundle=Path(ca) if ca else None,
            dev_mode=env.get("ORCHESTRA_DEV", "") in ("1", "true", "yes"),
            sandbox=_choice("ORCHESTRA_SANDBOX", env.get("ORCHESTRA_SANDBOX", defaults.sandbox), SANDBOXES),
            policy_file=Path(env["ORCHESTRA_POLICY_FILE"]) if env.get("ORCHESTRA_POLICY_FILE") else None,
            secrets_file=Path(env["ORCHESTRA_SECRETS_FILE"]) if env.get("ORCHESTRA_SECRETS_FILE") else None,
            log_format=_log_format(env.get("ORCHESTRA_LOG_FORMAT", defaults.log_format)),
            metrics_port=_port(env.get("ORCHESTRA_METRICS_PORT"), defaults.metrics_port),
            metrics_host=env.get("ORCHESTRA_METRICS_HOST", defaults.metrics_host),
            give_up_s=_give_up(env.get("ORCHESTRA_GIVE_UP_S"), defaults.give_up_s),
            tool_env={k: env[k] for k in TOOL_ENV_NAMES if k in env},
            terraform_cli_config=Path(env["TF_CLI_CONFIG_FILE"]) if env.get("TF_CLI_CONFIG_FILE") else None,
            terraform_mirror=Path(env["ORCHESTRA_TERRAFORM_MIRROR"]) if env.get("ORCHESTRA_TERRAFORM_MIRROR") else None,
        )

    @property
    def llm_configured(self) -> bool:
        """A model can be asked: a key for Anthropic's API, or the URL of a server of our own."""
        return bool(self.llm_api_key or self.llm_url)

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


def _llm(env: Mapping[str, str], defaults: Settings) -> dict[str, Any]:
    """The model settings: ORCHESTRA_LLM_* first, the protocol's usual variables as fallbacks."""
    protocol = env.get("ORCHESTRA_LLM_PROTOCOL", defaults.llm_protocol).strip().lower()
    if protocol not in LLM_PROTOCOLS:
        raise OrchestraError(f"ORCHESTRA_LLM_PROTOCOL={protocol!r} is not a protocol",
                             hint=f"use one of {', '.join(LLM_PROTOCOLS)}")
    fallback_url, fallback_key = (("OPENAI_BASE_URL", "OPENAI_API_KEY") if protocol == "openai"
                                  else ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"))
    url = env.get("ORCHESTRA_LLM_URL") or env.get(fallback_url) or None
    return {"llm_protocol": protocol, "llm_url": url,
            "llm_api_key": env.get("ORCHESTRA_LLM_API_KEY") or env.get(fallback_key) or None,
            "llm_model": env.get("ORCHESTRA_LLM_MODEL", defaults.llm_model),
            "llm_model_fast": env.get("ORCHESTRA_LLM_MODEL_FAST") or None,
            "llm_price": _price(env.get("ORCHESTRA_LLM_PRICE"), local=url is not None and "anthropic.com" not in url)}


def _price(value: str | None, *, local: bool) -> tuple[float, float] | None:
    """``"IN,OUT"`` USD per million tokens; a model of our own costs nothing unless told otherwise."""
    if not value:
        return (0.0, 0.0) if local else None
    try:
        per_in, per_out = (float(v) for v in value.split(","))
    except ValueError as exc:
        raise OrchestraError(f"ORCHESTRA_LLM_PRICE={value!r} is not a price",
                             hint="write the USD per million tokens in and out, e.g. 0.2,0.6") from exc
    return per_in, per_out


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value.strip().lower() not in choices:
        raise OrchestraError(f"{name}={value!r} is not one of {', '.join(choices)}",
                             hint=f"use one of {', '.join(choices)}")
    return value.strip().lower()


def _redis_url(value: str, *, sentinels: bool = False) -> str:
    """REDIS_URL: the password (or ACL user and password) rides in it; rediss:// for TLS.

    With sentinels it names no host: the sentinels say where the master is. Redis Cluster is refused:
    RQ's and the locks' scripts touch several keys that share no hash tag (README, "Redis failover").
    """
    scheme = value.partition("://")[0]
    if "cluster" in scheme:
        raise OrchestraError(f"REDIS_URL is a Redis Cluster URL ({scheme}://): Redis Cluster is not supported",
                             hint="RQ and the deploy locks use several keys in one command or script, which a "
                                  "Cluster refuses; use one Redis, or Redis Sentinel for failover: " + SENTINEL_HINT)
    if scheme not in ("redis", "rediss", "unix"):
        raise OrchestraError("REDIS_URL is not a Redis URL",
                             hint="write redis://:PASSWORD@HOST:6379/0, redis://USER:PASSWORD@HOST:6379/0, "
                                  "rediss://... for TLS, or unix://:PASSWORD@/path/to/redis.sock?db=0")
    if sentinels and (scheme == "unix" or value.partition("://")[2].partition("/")[0].rpartition("@")[2]):
        raise OrchestraError("REDIS_URL names a Redis server while REDIS_SENTINELS is set: the sentinels say "
                             "where the master is, so that address would be ignored", hint=SENTINEL_HINT)
    return value


def _sentinel(env: Mapping[str, str]) -> RedisSentinel | None:
    """REDIS_SENTINELS, REDIS_MASTER_NAME and REDIS_SENTINEL_PASSWORD: all acting together, or none set."""
    listed, name = env.get("REDIS_SENTINELS", "").strip(), env.get("REDIS_MASTER_NAME", "").strip()
    password = env.get("REDIS_SENTINEL_PASSWORD") or None
    if not listed:
        stray = [n for n, v in (("REDIS_MASTER_NAME", name), ("REDIS_SENTINEL_PASSWORD", password)) if v]
        if stray:
            raise OrchestraError(f"{' and '.join(stray)} set without REDIS_SENTINELS: nothing would use it",
                                 hint=SENTINEL_HINT + "; or unset it to use the one Redis of REDIS_URL")
        return None
    if not name:
        raise OrchestraError("REDIS_SENTINELS is set without REDIS_MASTER_NAME: the sentinels need the name "
                             "of the master to look up", hint=SENTINEL_HINT)
    addresses = tuple(_sentinel_address(a.strip()) for a in listed.split(","))
    if len(set(addresses)) != len(addresses):
        raise OrchestraError(f"REDIS_SENTINELS={listed!r} names a sentinel twice", hint=SENTINEL_HINT)
    return RedisSentinel(addresses=addresses, master_name=name, password=password)


def _sentinel_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT``."""
    host, _, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or any(c in host for c in "/@[] ") or not port.isdigit() or not 0 < int(port) < 65536:
        raise OrchestraError(f"REDIS_SENTINELS: {value!r} is not HOST:PORT",
                             hint="list the sentinels as HOST:PORT separated by commas, e.g. "
                                  "10.0.0.5:26379,10.0.0.6:26379,[::1]:26379 (no scheme, no password)")
    return host, int(port)


def _log_format(value: str) -> str:
    log_format = value.strip().lower()
    if log_format not in LOG_FORMATS:
        raise OrchestraError(f"ORCHESTRA_LOG_FORMAT={value!r} is not a log format",
                             hint=f"use one of {', '.join(LOG_FORMATS)}")
    return log_format


def _port(value: str | None, default: int) -> int:
    if not value:
        return default
    if not value.strip().isdigit() or not 0 < int(value) < 65535:
        raise OrchestraError(f"ORCHESTRA_METRICS_PORT={value!r} is not a port",
                             hint="use a free TCP port below 65535; a worker takes the one above it")
    return int(value)


def _give_up(value: str | None, default: float) -> float:
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= MIN_GIVE_UP_S:
        raise OrchestraError(f"ORCHESTRA_GIVE_UP_S={value!r} is not a number of seconds of at least {MIN_GIVE_UP_S:g}",
                             hint="how long a process waits for Redis (or a failing loop) before it exits to be "
                                  "restarted: e.g. 300; below 5 s /healthz would not say unwell before it exits")
    return seconds


def _float(value: str | None) -> float | None:
    return float(value) if value else None
