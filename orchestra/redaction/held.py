"""The secrets this process holds, by value: its credentials, and the values of ``secrets.keys``.

A value is held once its owner is known (the entry point holds the settings and the secret-named
variables of its environment; the stage runner the project's ``secrets.keys``); from then on it is
replaced wherever it appears, whatever its shape. Values shorter than ``MIN_HELD`` are not held:
redacting "test" or "admin" everywhere would break ordinary text more than it protects.
"""
from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Iterable, Mapping
from urllib.parse import quote, unquote, urlsplit

MIN_HELD = 8
# Names of settings and environment variables whose value is a credential.
SECRET_NAME = re.compile(r"(?i)(token|secret|passw|pwd|api_?key|access_?key|private_?key|app_?key|credential"
                         r"|auth_?token|session_?token|_key$|^key$|signing|dsn)")
# Named like a secret but never one: the shell's working directories; and a path is where a key is
# (GOOGLE_APPLICATION_CREDENTIALS=/etc/gcp/key.json), not the key.
NOT_SECRET = frozenset({"PWD", "OLDPWD"})
_PATH = re.compile(r"/[\w./-]*")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+")


class Held:
    """A thread-safe set of secret values and the one pattern that finds any of them."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None
        self._environ: Mapping[str, str] = {}

    def add(self, values: Iterable[str | None]) -> int:
        """Hold ``values`` (and their URL-encoded forms); how many were new."""
        new = {form for v in values if v and len(v) >= MIN_HELD for form in (v, quote(v, safe=""), unquote(v))
               if len(form) >= MIN_HELD}
        with self._lock:
            new -= self._values
            if new:
                self._values |= new
                longest_first = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile("|".join(map(re.escape, longest_first)))
        return len(new)

    def pattern(self) -> re.Pattern[str] | None:
        return self._pattern

    def remember_environ(self, environ: Mapping[str, str]) -> None:
        """Where ``secrets.keys`` are looked up later (the entry point's environment)."""
        self._environ = dict(environ)

    def lookup(self, names: Iterable[str]) -> list[str]:
        return [self._environ[n] for n in names if self._environ.get(n)]

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._pattern = None


def credentials_of(settings: object) -> list[str]:
    """Every credential in a settings object: fields named like one, and passwords in its URLs."""
    values: list[str] = []
    for f in dataclasses.fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, f.name)
        if isinstance(value, Mapping):
            values += environ_secrets(value)
        elif isinstance(value, str):
            values += ([value] if SECRET_NAME.search(f.name) else []) + url_passwords(value)
    return values


def environ_secrets(environ: Mapping[str, str]) -> list[str]:
    """Values of variables named like a secret (AWS_SECRET_ACCESS_KEY, DB_PASSWORD...), and URL passwords."""
    values: list[str] = []
    for name, value in environ.items():
        if SECRET_NAME.search(name) and name not in NOT_SECRET and not _PATH.fullmatch(value):
            values.append(value)
        values += url_passwords(value)
    return values


def url_passwords(text: str) -> list[str]:
    """The passwords of the URLs in ``text`` (redis://:pw@host, https://user:pw@host)."""
    out = []
    for match in _URL.finditer(text):
        try:
            password = urlsplit(match.group(0)).password
        except ValueError:
            continue
        if password:
            out.append(password)
    return out
