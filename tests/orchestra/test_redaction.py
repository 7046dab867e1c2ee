"""Redaction: every secret of the corpus goes, ordinary text stays, held values go whatever their shape.

The corpus (tests/fixtures/secrets/corpus.yaml) is fake secrets in real shapes, each in a line as it
would appear in test output, a commit message or a crash log. A secret counts as leaked when any
10 characters of it in a row are still in the output: half a key is a key.
"""
from __future__ import annotations

import io
import json
import logging
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from orchestra import redaction
from orchestra.logs import log_handler
from orchestra.redaction import REDACTED, detectors, redact, redact_data
from orchestra.settings import Settings

CORPUS_FILE = Path(__file__).resolve().parents[1] / "fixtures" / "secrets" / "corpus.yaml"
WINDOW = 10


@dataclass(frozen=True)
class Secret:
    id: str
    kind: str
    secret: str
    text: str


def load_corpus() -> list[Secret]:
    return [Secret(**case) for case in yaml.safe_load(CORPUS_FILE.read_text())["cases"]]


CORPUS = load_corpus()


def leaks(secret: str, out: str) -> list[str]:
    """The pieces of ``secret`` (WINDOW characters long) still in ``out``."""
    if len(secret) <= WINDOW:
        return [secret] if secret in out else []
    return [secret[i:i + WINDOW] for i in range(len(secret) - WINDOW + 1) if secret[i:i + WINDOW] in out]


def assert_no_secret(texts: Iterable[str], corpus: Iterable[Secret] = CORPUS) -> None:
    joined = "\n".join(texts)
    leaked = {s.id: leaks(s.secret, joined)[:2] for s in corpus if leaks(s.secret, joined)}
    assert not leaked, f"secrets reached the output: {leaked}"


@pytest.fixture(autouse=True)
def fresh_process() -> Iterator[None]:
    """Each test starts with no held values, as a new process would."""
    redaction.forget_all()
    yield
    redaction.forget_all()


def test_the_corpus_is_big_and_varied() -> None:
    assert len(CORPUS) >= 40 and len({c.kind for c in CORPUS}) >= 15
    assert len({c.id for c in CORPUS}) == len(CORPUS)
    assert all(c.secret in c.text for c in CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_every_secret_of_the_corpus_is_redacted(case: Secret) -> None:
    out = redact(case.text)
    assert not leaks(case.secret, out), out
    assert REDACTED in out
    assert redact(out) == out  # redacting twice changes nothing: events are redacted at emit and at publish


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_a_secret_inside_a_json_string_is_redacted_too(case: Secret) -> None:
    """Events, JSON log lines and tool output quote the text once or twice over (\\" and \\\\\\")."""
    for form in (json.dumps(case.text), json.dumps(json.dumps(case.text))):
        assert not leaks(case.secret, redact(form)), redact(form)


@pytest.mark.parametrize("invisible", ["\u200b", "\u2060", "\ufeff", "\u00ad"])
def test_invisible_characters_do_not_hide_a_token(invisible: str) -> None:
    """Test output that prints a key with zero-width characters inside reads the same in Slack: still a key."""
    for case in (c for c in CORPUS if c.kind in ("github", "slack", "aws", "stripe")):
        hidden = case.text.replace(case.secret, invisible.join(case.secret))
        assert not leaks(case.secret, redact(hidden).replace(invisible, "")), case.id


def test_each_shape_of_our_own_has_a_corpus_case() -> None:
    """A pattern we keep beside detect-secrets is there for a kind it misses, and is proven on it."""
    for name, _, pattern in detectors.OWN_SHAPES:
        assert any(pattern.search(c.text) for c in CORPUS), f"no corpus case for our shape {name!r}"


def test_the_corpus_all_at_once_as_one_crash_log() -> None:
    log = "\n".join(f"line {i}: {c.text}" for i, c in enumerate(CORPUS))
    out = redact(log)
    assert_no_secret([out])
    assert all(f"line {i}: " in out for i in range(len(CORPUS)))  # a key's own lines go, no line around it


ORDINARY = [
    "commit 3f9c2ab1e4d5c6b7a8990011223344556677889a (short 3f9c2ab)",
    "run r-20261130-abc123 finished in 12.5s",
    "image 127.0.0.1:5050/shop/frontend:3f9c2ab",
    "sha256:6b86b273ff34fce19d6b804eff5a3f5747ada4ea22f1d49c01e52ddb7875b4b8",
    "request 123e4567-e89b-12d3-a456-426614174000",
    "pydantic 2.14.3, v1.2.3-rc.1+build.5, python3.11",
    "https://github.com/acme/shop/pull/12 redis://127.0.0.1:6379/0 ssh://git@github.com/acme/shop.git",
    "git@github.com:acme/shop.git alice@example.com",
    "tests/test_auth.py::test_token_refresh PASSED [ 50%]",
    "max_tokens=2048 token_budget: 200000 llm_run_token_budget=200000",
    'password = settings.password; api_key=None; token = os.environ["GITHUB_TOKEN"]',
    "Slack ts 1700000000.123456 user U0ALICE channel C0123ABC <@U0ALICE>",
    "Basic authentication is required; the token expired, refresh the token and retry",
    "Bearer Authentication failed for this endpoint",
    "secret_key: ${SECRET_KEY} and AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY",
    "E   AssertionError: assert 'ABCDEFGHIJKLMNOPQRST' == 'x'",
    "123456789012.dkr.ecr.us-east-1.amazonaws.com/shop:3f9c2ab arn:aws:ecs:us-east-1:123456789012:service/shop",
    "event 1764460800123-0 · deploy frontend `3f9c2ab` (hotfix-v2) to production",
    "KeyError: 'DATABASE_URL' (see the secrets.keys of devops_orchestra.yaml)",
    "error: Redis serves clients that send no password: anyone who reaches its port can read runs",
    "the token: expired. Secret: rotated yesterday",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_is_left_alone(text: str) -> None:
    """False positives break threads, digests and version strings: none of these change."""
    assert redact(text) == text


def test_a_url_keeps_its_host_and_loses_only_its_password() -> None:
    assert redact("postgresql://shop:pw-0f9a8b7c@db.internal:5432/shop") == \
        "postgresql://shop:[REDACTED]@db.internal:5432/shop"
    assert redact("REDIS_URL=redis://:0f9a8b7c6d5e@127.0.0.1:6379/0") == "REDIS_URL=redis://:[REDACTED]@127.0.0.1:6379/0"


def test_values_the_process_holds_are_redacted_whatever_their_shape() -> None:
    webhook, redis_pw, aws_secret, db_pw, plain = (secrets.token_hex(16), secrets.token_hex(12),
                                                   secrets.token_urlsafe(30), "Tr0ub4dor&3x", "correct-horse")
    settings = Settings().with_(github_webhook_secret=webhook, redis_url=f"redis://:{redis_pw}@10.0.0.5:6379/0",
                                slack_bot_token="custom-bot-credential-42")
    environ = {"AWS_SECRET_ACCESS_KEY": aws_secret, "STRIPE_DB": db_pw, "HOME": "/root", "PWD": "/work/main",
               "OLDPWD": "/srv/orchestra", "GOOGLE_APPLICATION_CREDENTIALS": "/etc/gcp/deployer-key.json",
               "ORCHESTRA_WORKDIR": "/var/lib/orchestra", "SHORT_TOKEN": "abc"}
    assert all(redact(v) == v for v in (webhook, redis_pw, aws_secret))  # no shape the detector knows
    redaction.protect_process(settings, environ)
    text = (f"sig={webhook[:4]} {webhook} connecting 10.0.0.5 with {redis_pw}; {aws_secret}; custom-bot-credential-42;"
            f" {db_pw} {plain} /root /var/lib/orchestra abc")
    out = redact(text)
    for value in (webhook, redis_pw, aws_secret, "custom-bot-credential-42"):
        assert value not in out
    assert db_pw in out  # STRIPE_DB is not named like a secret: only secrets.keys can say it is one
    assert redaction.hold_keys(["STRIPE_DB", "NOT_SET"]) >= 1  # the value (and its URL-encoded form)
    assert db_pw not in redact(text)
    assert "/root /var/lib/orchestra abc" in out and plain in out  # HOME, paths, values under 8 characters
    paths = "/work/main/.venv, /srv/orchestra and /etc/gcp/deployer-key.json"
    assert redact(paths) == paths  # PWD is no password, and a credential's path is not the credential


def test_a_held_value_is_also_caught_url_encoded() -> None:
    password = "p@ss/w0rd:with?odd&chars"
    redaction.hold(password)
    assert redact("amqp://u:p%40ss%2Fw0rd%3Awith%3Fodd%26chars@rabbit/") == "amqp://u:[REDACTED]@rabbit/"
    assert password not in redact(f"echo {password}")


def test_nested_event_data_is_redacted_but_keeps_its_structure() -> None:
    case = next(c for c in CORPUS if c.id == "github-classic")
    data = {"summary": case.text, "services": {"api": {"failures": [{"message": case.text, "line": 3}]}},
            "ok": False, "tags": ("a", case.secret)}
    out = redact_data(data)
    assert out["services"]["api"]["failures"][0]["line"] == 3 and out["ok"] is False
    assert_no_secret([json.dumps(out)], [case])


# --- logs: the filter on the handler every process installs ----------------------------------------------

@pytest.mark.parametrize("log_format", ["text", "json"])
def test_log_lines_tracebacks_and_arguments_are_redacted(log_format: str) -> None:
    stream = io.StringIO()
    logger = logging.getLogger(f"tests.redaction.{log_format}")
    logger.addHandler(log_handler(log_format, stream))
    logger.propagate = False
    try:
        cases = CORPUS[:20]
        for case in cases[:10]:
            logger.warning("run r-20261130-abc123: stage failed: %s", case.text)  # the secret as an argument
        for case in cases[10:]:
            try:
                raise RuntimeError(f"crashed with {case.text}")
            except RuntimeError:
                logger.exception("worker crashed")  # the secret in the traceback only
    finally:
        logger.handlers.clear()
    out = stream.getvalue()
    assert_no_secret([out], cases)
    assert out.count(REDACTED) >= len(cases)
    if log_format == "json":
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert len(lines) == 20 and all("exc" in line for line in lines[10:])
        assert lines[0]["run_id"] == "r-20261130-abc123"


def test_a_log_line_that_cannot_be_checked_is_withheld() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("tests.redaction.broken")
    logger.addHandler(log_handler("text", stream))
    logger.propagate = False
    try:
        logger.error("token %d", "ghp_" + "a" * 36)  # a format that does not fit its argument
    finally:
        logger.handlers.clear()
    assert "ghp_" not in stream.getvalue() and "log line withheld" in stream.getvalue()
