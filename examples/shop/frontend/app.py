"""Shop frontend: an HTML page listing the items the backend serves, with /health and /metrics."""
from __future__ import annotations

import http.client
import json
import os
import random
import time
import urllib.parse

from flask import (
    Flask,
    Response,
    current_app,
    g,
    jsonify,
    render_template_string,
    request,
)
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

PAGE = """<!doctype html>
<html><head><title>Shop</title></head>
<body>
<h1>Shop</h1>
{% if error %}<p class="error">The catalogue is unavailable right now: {{ error }}</p>
{% else %}<ul>
{% for item in items %}<li>{{ item.name }}: {{ "%.2f"|format(item.price) }}</li>
{% endfor %}</ul>
{% endif %}
<footer>version {{ version }}</footer>
</body></html>
"""

REQUESTS = Counter("http_requests_total", "Application requests by version, status and path",
                   ["version", "status", "path"])
LATENCY = Histogram("http_request_duration_seconds", "Application request duration by version", ["version"])
# Endpoints that are never faulted and not counted, so probes and scrapes do not skew error rates.
UNTOUCHED = ("/health", "/metrics")
# Memory kept on purpose when FAULT_LEAK_KB is set (a leak for rollback demos).
LEAKED: list[bytearray] = []
_RANDOM = random.SystemRandom()


def settings_from(environ: dict[str, str]) -> dict[str, object]:
    """Version and fault knobs from environment variables."""
    return {
        "APP_VERSION": environ.get("APP_VERSION", "dev"),
        "FAULT_ERROR_RATE": float(environ.get("FAULT_ERROR_RATE", "0") or 0),
        "FAULT_LATENCY_MS": float(environ.get("FAULT_LATENCY_MS", "0") or 0),
        "FAULT_LEAK_KB": int(environ.get("FAULT_LEAK_KB", "0") or 0),
    }


def install(app: Flask) -> None:
    """Add /metrics, request metrics and the fault knobs to ``app``."""
    app.before_request(_start)
    app.after_request(_record)
    app.add_url_rule("/metrics", "metrics", _metrics)


def _start() -> Response | None:
    g.started = time.perf_counter()
    if request.path in UNTOUCHED:
        return None
    config = _app_config()
    if config["FAULT_LEAK_KB"] > 0:
        LEAKED.append(bytearray(config["FAULT_LEAK_KB"] * 1024))
    if config["FAULT_LATENCY_MS"] > 0:
        time.sleep(config["FAULT_LATENCY_MS"] / 1000)
    if _RANDOM.random() < config["FAULT_ERROR_RATE"]:
        response = jsonify(error="injected fault (FAULT_ERROR_RATE)")
        response.status_code = 500
        return response
    return None


def _record(response: Response) -> Response:
    if request.path not in UNTOUCHED:
        version = _app_config()["APP_VERSION"]
        path = request.url_rule.rule if request.url_rule is not None else "unmatched"
        REQUESTS.labels(version=version, status=str(response.status_code), path=path).inc()
        LATENCY.labels(version=version).observe(time.perf_counter() - g.get("started", time.perf_counter()))
    return response


def _metrics() -> Response:
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)


def _app_config() -> dict:
    return current_app.config


def fetch_items(backend_url: str, timeout: float = 2.0) -> list[dict]:
    """The items from the backend's /api/items (plain HTTP only)."""
    url = urllib.parse.urlsplit(backend_url)
    if url.scheme != "http" or not url.hostname:
        raise ValueError(f"BACKEND_URL must be an http:// URL, not {backend_url!r}")
    connection = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=timeout)
    try:
        connection.request("GET", f"{url.path.rstrip('/')}/api/items")
        reply = connection.getresponse()
        if reply.status != 200:
            raise ValueError(f"the backend answered HTTP {reply.status}")
        return json.loads(reply.read())["items"]
    finally:
        connection.close()


def create_app(config: dict | None = None) -> Flask:
    """The application; ``config`` overrides what the environment says (tests)."""
    app = Flask(__name__)
    app.config.update(settings_from(dict(os.environ)))
    app.config["BACKEND_URL"] = os.environ.get("BACKEND_URL", "http://127.0.0.1:5001")
    app.config.update(config or {})
    install(app)

    @app.get("/health")
    def health():
        return {"status": "ok", "service": "frontend", "version": app.config["APP_VERSION"]}

    @app.get("/")
    def index():
        version = app.config["APP_VERSION"]
        try:
            items = fetch_items(app.config["BACKEND_URL"])
        except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
            return render_template_string(PAGE, error=str(exc), items=[], version=version), 502
        return render_template_string(PAGE, error=None, items=items, version=version)

    return app


if __name__ == "__main__":
    create_app().run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "5000")))
