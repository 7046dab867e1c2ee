"""Where secrets sit in a text: Yelp's detect-secrets plugins, plus the shapes they do not know.

detect-secrets (https://github.com/Yelp/detect-secrets) keeps the token formats of the common
providers; we use its regex plugins for finding, not its file scanner. Left out on purpose: the
high-entropy plugins (every commit SHA and image digest is high-entropy hex) and the public-IP one
(an address is not a secret). Each of our own shapes below covers a kind the plugins miss and has a
case in tests/fixtures/secrets/corpus.yaml.
"""
from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterator
from functools import cache
from typing import Any

Span = tuple[int, int]

# A token goes on as long as these characters do (a detector may match only its prefix, e.g. a JWT's
# header and payload, or the first 24 characters of a Stripe key); base64 padding may end it.
_TOKEN_TAIL = re.compile(r"[A-Za-z0-9_~+/.-]*=*")
_TRIM = " \t\r\n\"'=:,;"
_NEWLINE = re.compile(r"\n")

# Words without which a keyword-based pattern cannot match: a text that has none skips it (speed).
KEYWORDS = ("key", "pw", "passw", "token", "secret", "credential", "signing")
# Each shape: its name, the lowercase words one of which it needs (a cheap test first), its pattern.
OWN_SHAPES: tuple[tuple[str, tuple[str, ...], re.Pattern[str]], ...] = (
    # A whole PEM private key, also inside JSON where its newlines are written as \n (GCP service accounts),
    # and one cut short (a clipped log): up to the END line or the first character no key has.
    ("private key", ("private key",), re.compile(
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[A-Za-z0-9+/=\s\\:,-]*?"
        r"(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|(?=[^A-Za-z0-9+/=\s\\:,-])|\Z)")),
    # Credentials in a URL, an empty user included (redis://:pw@host): the password only, the host stays.
    ("url password", ("://",), re.compile(r"(?<=[a-z0-9])://[^\s:/@'\"]*:([^\s@/'\"]+)@[^\s@]")),
    ("slack token", ("xox",), re.compile(r"\bxox(?:e\.xox[a-z]|[a-z])-[A-Za-z0-9-]{8,}")),
    ("slack app token", ("xapp-",), re.compile(r"\bxapp-\d-[A-Za-z0-9-]{8,}")),
    ("github fine-grained token", ("github_pat_",), re.compile(r"\bgithub_pat_[A-Za-z0-9_]{40,}")),
    ("stripe key", ("k_live_", "k_test_", "whsec_"),
     re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{16,}|\bwhsec_[0-9A-Za-z]{24,}")),
    ("anthropic key", ("sk-ant-",), re.compile(r"\bsk-ant-[A-Za-z0-9_-]{10,}")),
    ("llm api key", ("sk-",), re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_-]{32,}")),
    ("google api key", ("aiza",), re.compile(r"\bAIza[0-9A-Za-z_-]{35}")),
    ("npm token", ("npm_",), re.compile(r"\bnpm_[A-Za-z0-9]{36}\b")),
    ("docker hub token", ("dckr_pat_",), re.compile(r"\bdckr_pat_[A-Za-z0-9_-]{20,}")),
    ("vault token", ("hvs.", "hvb.", "hvr."), re.compile(r"\bhv[sbr]\.[A-Za-z0-9_-]{24,}")),
    ("aws session token", ("fwogzxivyxdze", "iqojb3jpz2lux2vj"),
     re.compile(r"\b(?:FwoGZXIvYXdzE|IQoJb3JpZ2luX2Vj)[A-Za-z0-9/+=]{100,}")),
    # Authorization headers (and their dict spellings): the credential after the scheme.
    ("authorization", ("bearer", "basic", "token"), re.compile(
        r"\b(?i:bearer)\s+(?=.\S*[0-9A-Z])([A-Za-z0-9._~+/-]{8,}=*)"  # "Bearer Authentication" is prose
        r"|\b(?i:basic|token)\s+(?=[A-Za-z._~+/-]*\d)([A-Za-z0-9._~+/-]{16,}=*)")),
    # Docker's config.json: "auth": "<base64 of user:password>", also inside a JSON string
    ("docker auth", ("auth",), re.compile(r"\\*\"auth\\*\"\s*:\s*\\*\"([A-Za-z0-9+/]{12,}=*)\\*\"")),
    # `KEY=value`, `key: value`, `--password=value`, whose key names a secret, also with its quotes escaped
    # (inside a JSON string); not code that reads one.
    ("assignment", KEYWORDS, re.compile(
        r"""(?ix)(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key
            |credentials?|auth[_-]?key|signing[_-]?key)[\w.-]*(?:\\*["'])?\s*
            (?:=|:(?=\s*(?:\\*["'])?[^\s"'\\]*[^a-z\s"'\\.,;:)]))  # `key: word` in prose is not a secret
            \s*(?:\\*["'])?
            (?!(?:None|null|nil|true|false|os\.|self\.|request\.|settings\.|config\.|env\.|process\.env|getenv
                |environ|\$|\{|<|\[REDACTED\]|\*+["'\s]|\d+\b))
            ([^\s"'\\]{5,}[^\s"'\\),;.])""")),  # a closing bracket or full stop after it is prose
)


def spans(text: str) -> Iterator[Span]:
    """Every place in ``text`` that holds a secret, as (start, end); they may overlap.

    A pattern with hints runs only on the lines that hold one (a hint is part of what it matches), so
    a long test log costs little more than its few suspicious lines; a private key spans lines and is
    looked for in the whole text, as are the patterns without hints.
    """
    lower = text.lower()
    lines = _Lines(text, lower)
    for plugin, hints in _plugins():
        for pattern in plugin.denylist:
            for match in lines.matches(pattern, hints):
                if _accepted(plugin, match):
                    yield _widen(text, *_secret_part(match))
    for name, hints, pattern in OWN_SHAPES:
        for match in lines.matches(pattern, hints, whole=name == "private key"):
            group = match.lastindex or 0
            yield _widen(text, *match.span(group)) if group else match.span()


class _Lines:
    """The text's lines, and the matches of a pattern on those that hold one of its hints."""

    def __init__(self, text: str, lower: str) -> None:
        self.text, self.lower = text, lower
        self._starts: list[int] | None = None
        self._found: dict[tuple[str, ...], list[tuple[int, int]]] = {}

    def matches(self, pattern: re.Pattern[str], hints: tuple[str, ...], *,
                whole: bool = False) -> Iterator[re.Match[str]]:
        if not hints:
            yield from pattern.finditer(self.text)
        elif whole:
            if any(h in self.lower for h in hints):
                yield from pattern.finditer(self.text)
        else:
            for start, end in self._lines_with(hints):
                yield from pattern.finditer(self.text, start, end)

    def _lines_with(self, hints: tuple[str, ...]) -> list[tuple[int, int]]:
        """The (start, end) of each line holding a hint: found with str.find, so a clean log costs little."""
        if hints not in self._found and len(self.text) < 4096:  # a log line, a summary: no need to split it
            self._found[hints] = [(0, len(self.text))] if any(h in self.lower for h in hints) else []
        if hints not in self._found:
            starts = self._line_starts()
            lines: set[int] = set()
            for hint in hints:
                at = self.lower.find(hint)
                while at != -1:
                    line = bisect_right(starts, at) - 1
                    lines.add(line)
                    next_line = starts[line + 1] if line + 1 < len(starts) else len(self.text)
                    at = self.lower.find(hint, next_line)
            self._found[hints] = [(starts[i], starts[i + 1] if i + 1 < len(starts) else len(self.text))
                                  for i in sorted(lines)]
        return self._found[hints]

    def _line_starts(self) -> list[int]:
        if self._starts is None:
            self._starts = [0] + [m.end() for m in _NEWLINE.finditer(self.text)]
        return self._starts


def _secret_part(match: re.Match[str]) -> Span:
    """The secret in a plugin's match: a capture group, unless the group is just the token's prefix."""
    groups = [i for i in range(1, (match.re.groups or 0) + 1) if match.group(i)]
    inner = [i for i in groups if match.start(i) > match.start()]
    if not inner:
        return match.span()
    best = max(inner, key=lambda i: match.end(i) - match.start(i))
    return match.span(best)


def _widen(text: str, start: int, end: int) -> Span:
    """Trim quotes and separators a pattern took along, and follow the token to its end."""
    while start < end and text[start] in _TRIM:
        start += 1
    while end > start and text[end - 1] in _TRIM:
        end -= 1
    tail = _TOKEN_TAIL.match(text, end)
    return start, tail.end() if tail else end


def _accepted(plugin: Any, match: re.Match[str]) -> bool:
    """Plugins with a validity check of their own (JWT: the parts decode) keep it."""
    check = getattr(plugin, "is_formally_valid", None)
    return check is None or bool(check(match.group(0)))


@cache
def _plugins() -> tuple[Any, ...]:
    """detect-secrets' regex plugins (imported on first use: ``orchestra --help`` stays fast)."""
    from detect_secrets.plugins import (
        artifactory,
        aws,
        azure_storage_key,
        basic_auth,
        cloudant,
        discord,
        github_token,
        gitlab_token,
        ibm_cloud_iam,
        ibm_cos_hmac,
        jwt,
        mailchimp,
        npm,
        openai,
        pypi_token,
        sendgrid,
        slack,
        softlayer,
        square_oauth,
        stripe,
        telegram_token,
        twilio,
    )
    # Each plugin with the lowercase words one of which its patterns need (none: always run). IBM's and
    # SoftLayer's keyword patterns also match without their prefix; those `api_key = ...` lines are the
    # assignment shape's.
    cl = ("cloudant", "clou", "cl_", "cl-", "clapi", "clkey", "clpw", "clpass", "cltoken")
    sl = ("softlayer", "sl_", "sl-", "slapi", "slkey", "slpw", "slpass", "sltoken")
    return ((aws.AWSKeyDetector(), ("akia", "asia", "abia", "acca", "a3t", "aws")),
            (artifactory.ArtifactoryDetector(), ()),
            (azure_storage_key.AzureStorageKeyDetector(), ("accountkey",)),
            (basic_auth.BasicAuthDetector(), ("://",)),
            (cloudant.CloudantDetector(), cl),
            (discord.DiscordBotTokenDetector(), ()),
            (github_token.GitHubTokenDetector(), ("gh",)),
            (gitlab_token.GitLabTokenDetector(), ("gl", "gr1348941")),
            (ibm_cloud_iam.IbmCloudIamDetector(), ("ibm", "iam")),
            (ibm_cos_hmac.IbmCosHmacDetector(), ("cos",)),
            (jwt.JwtTokenDetector(), ("eyj",)),
            (mailchimp.MailchimpDetector(), ("-us",)),
            (npm.NpmDetector(), ("_authtoken",)),
            (openai.OpenAIDetector(), ("t3blbkfj",)),
            (pypi_token.PypiTokenDetector(), ("pypi-",)),
            (sendgrid.SendGridDetector(), ("sg.",)),
            (slack.SlackDetector(), ("xox", "hooks.slack.com")),
            (softlayer.SoftlayerDetector(), sl),
            (square_oauth.SquareOAuthDetector(), ("sq0csp",)),
            (stripe.StripeDetector(), ("k_live_",)),
            (telegram_token.TelegramBotTokenDetector(), ()),
            (twilio.TwilioKeyDetector(), ()))
