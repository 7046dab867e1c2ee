from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture
def client(shop_app):
    return shop_app.create_app({"APP_VERSION": "t-backend"}).test_client()


def sample(client, name: str, **labels: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def test_health_reports_the_version(client):
    reply = client.get("/health")
    assert reply.status_code == 200
    assert reply.get_json() == {"status": "ok", "service": "backend", "version": "t-backend"}


def test_items_are_listed_and_fetched_by_id(client):
    items = client.get("/api/items").get_json()["items"]
    assert [i["id"] for i in items] == [1, 2, 3]
    assert client.get("/api/items/2").get_json()["name"] == "Pour-over kettle"
    assert client.get("/api/items/99").status_code == 404


def test_requests_are_counted_by_version_status_and_path(client):
    before = sample(client, "http_requests_total", version="t-backend", status="200", path="/api/items")
    client.get("/api/items")
    client.get("/api/items")
    after = sample(client, "http_requests_total", version="t-backend", status="200", path="/api/items")
    assert after - before == 2
    assert sample(client, "http_request_duration_seconds_count", version="t-backend") >= 2


def test_error_fault_fails_requests_but_not_health(shop_app):
    client = shop_app.create_app({"APP_VERSION": "t-faulty", "FAULT_ERROR_RATE": 1.0}).test_client()
    assert client.get("/api/items").status_code == 500
    assert client.get("/health").status_code == 200
    assert sample(client, "http_requests_total", version="t-faulty", status="500", path="/api/items") == 1


def test_latency_and_leak_faults(shop_app):
    config = {"APP_VERSION": "t-slow", "FAULT_LATENCY_MS": 60, "FAULT_LEAK_KB": 16}
    client = shop_app.create_app(config).test_client()
    leaked = len(shop_app.LEAKED)
    started = time.perf_counter()
    assert client.get("/api/items").status_code == 200
    assert time.perf_counter() - started >= 0.06
    assert len(shop_app.LEAKED) == leaked + 1 and len(shop_app.LEAKED[-1]) == 16 * 1024
