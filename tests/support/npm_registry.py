"""A local npm registry speaking the two things ``npm audit`` asks of one, on loopback.

``POST /-/npm/v1/security/advisories/bulk``: npm sends ``{package: [versions]}`` (gzipped) and reads back
``{package: [{id, url, title, severity, vulnerable_versions, cwe, cvss}]}``: each advisory the registry knows
for a package npm asked about. ``GET /<package>``: the packument npm reads to tell whether a fix exists.
``status`` makes the advisory endpoint refuse with that HTTP status (the proxy here answers 405).
"""
from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

BULK = "/-/npm/v1/security/advisories/bulk"
# How a test writes a package-lock.json from the public registry: versions published before a fixed day only, so
# that a release made minutes ago (that one of the registry's replicas already lists and the next one does not)
# never lands in the lock file that `npm ci` then installs
NPM_LOCK_ONLY = ["npm", "install", "--package-lock-only", "--ignore-scripts", "--no-audit", "--before=2026-11-01"]


@dataclass
class NpmRegistry:
    url: str = ""
    advisories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    packuments: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: int | None = None  # the advisory endpoint answers this status instead
    delay_s: float = 0.0  # the advisory endpoint waits this long before answering
    bulk_requests: list[dict[str, list[str]]] = field(default_factory=list)

    def advise(self, package: str, *, id: int, severity: str, vulnerable: str, title: str,
               versions: tuple[str, ...] = ()) -> None:
        """An advisory for ``package``; ``versions`` are what its packument lists (a fix is one outside
        ``vulnerable``)."""
        self.advisories.setdefault(package, []).append({
            "id": id, "url": f"https://github.com/advisories/GHSA-test-{id}", "title": title,
            "severity": severity, "vulnerable_versions": vulnerable, "cwe": ["CWE-1321"],
            "cvss": {"score": 7.5, "vectorString": None}})
        if versions:
            self.packuments[package] = {
                "name": package, "dist-tags": {"latest": versions[-1]},
                "versions": {v: {"name": package, "version": v,
                                 "dist": {"tarball": f"{self.url}/{package}/-/{package}-{v}.tgz"}}
                             for v in versions}}


def _handler(registry: NpmRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != BULK:
                return self._answer(404, {"error": "not found"})
            time.sleep(registry.delay_s)
            if registry.status is not None:
                return self._answer(registry.status, {"error": "Method Not Allowed"})
            if self.headers.get("Content-Encoding") == "gzip":
                raw = gzip.decompress(raw)
            asked: dict[str, list[str]] = json.loads(raw)
            registry.bulk_requests.append(asked)
            self._answer(200, {name: registry.advisories[name] for name in asked if name in registry.advisories})

        def do_GET(self) -> None:
            name = unquote(self.path.lstrip("/"))
            if name in registry.packuments:
                return self._answer(200, registry.packuments[name])
            self._answer(404, {"error": "not found"})

    return Handler


@contextmanager
def npm_registry() -> Iterator[NpmRegistry]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(registry := NpmRegistry()))
    registry.url = f"http://127.0.0.1:{server.server_address[1]}"
    server.daemon_threads = True  # a request still waiting does not hold up the shutdown
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield registry
    finally:
        server.shutdown()
        server.server_close()
