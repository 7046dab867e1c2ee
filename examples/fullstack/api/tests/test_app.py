from __future__ import annotations

from app import create_app


def client(version: str = "t1"):
    return create_app({"TESTING": True, "APP_VERSION": version}).test_client()


def test_health_names_the_service_and_version() -> None:
    assert client("v2").get("/health").get_json() == {"status": "ok", "service": "api", "version": "v2"}


def test_books_are_listed_with_the_version() -> None:
    body = client("v3").get("/api/books").get_json()
    assert [b["title"] for b in body["books"]][:2] == ["The Phoenix Project", "Accelerate"]
    assert body["version"] == "v3"


def test_requests_are_counted_in_metrics_but_probes_are_not() -> None:
    c = client("m1")
    c.get("/api/books")
    c.get("/health")
    c.get("/nope")
    text = c.get("/metrics").get_data(as_text=True)
    assert 'http_requests_total{path="/api/books",status="200",version="m1"} 1.0' in text
    assert 'http_requests_total{path="unmatched",status="404",version="m1"} 1.0' in text
    assert 'path="/health"' not in text
