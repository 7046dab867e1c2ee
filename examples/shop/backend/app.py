"""Shop backend: a small JSON API of items, with /health and Prometheus /metrics."""
from __future__ import annotations

import os
import random
import time

from flask import Flask, Response, abort, current_app, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

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


ITEMS = [
    {"id": 1, "name": "Espresso cup", "price": 8.5},
    {"id": 2, "name": "Pour-over kettle", "price": 42.0},
    {"id": 3, "name": "Coffee beans 1 kg", "price": 24.9},
]


def create_app(config: dict | None = None) -> Flask:
    """The application; ``config`` overrides what the environment says (tests)."""
    app = Flask(__name__)
    app.config.update(settings_from(dict(os.environ)))
    app.config.update(config or {})
    install(app)

    @app.get("/health")
    def health():
        return jsonify(status="ok", service="backend", version=app.config["APP_VERSION"])

    @app.get("/api/items")
    def items():
        return jsonify(items=ITEMS, version=app.config["APP_VERSION"])

    @app.get("/api/items/<int:item_id>")
    def item(item_id: int):
        found = next((i for i in ITEMS if i["id"] == item_id), None)
        if found is None:
            abort(404)
        return jsonify(found)

    @app.errorhandler(404)
    def not_found(error):
        return jsonify(error="not found"), 404

    return app


if __name__ == "__main__":
    create_app().run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "5001")))
