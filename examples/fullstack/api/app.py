"""Fullstack API: the books the web page lists, with /health and Prometheus /metrics."""
from __future__ import annotations

import os
import time

from flask import Flask, Response, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

REQUESTS = Counter("http_requests_total", "API requests by version, status and path", ["version", "status", "path"])
LATENCY = Histogram("http_request_duration_seconds", "API request duration by version", ["version"])
UNCOUNTED = ("/health", "/metrics")

BOOKS = [
    {"id": 1, "title": "The Phoenix Project", "year": 2013},
    {"id": 2, "title": "Accelerate", "year": 2018},
    {"id": 3, "title": "Site Reliability Engineering", "year": 2016},
]


def create_app(config: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.config["APP_VERSION"] = os.environ.get("APP_VERSION", "dev")
    app.config.update(config or {})

    @app.before_request
    def start() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def record(response: Response) -> Response:
        if request.path not in UNCOUNTED:
            version = app.config["APP_VERSION"]
            path = request.url_rule.rule if request.url_rule is not None else "unmatched"
            REQUESTS.labels(version=version, status=str(response.status_code), path=path).inc()
            LATENCY.labels(version=version).observe(time.perf_counter() - g.started)
        return response

    @app.get("/health")
    def health():
        return jsonify(status="ok", service="api", version=app.config["APP_VERSION"])

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)

    @app.get("/api/books")
    def books():
        return jsonify(books=BOOKS, version=app.config["APP_VERSION"])

    @app.errorhandler(404)
    def not_found(error):
        return jsonify(error="not found"), 404

    return app


if __name__ == "__main__":
    create_app().run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "5002")))
