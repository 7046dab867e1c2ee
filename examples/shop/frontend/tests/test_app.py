from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

ITEMS = [{"id": 1, "name": "Espresso cup", "price": 8.5}, {"id": 2, "name": "Kettle", "price": 42.0}]


class FakeBackend(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"items": ITEMS}).encode()
        self.send_response(200 if self.path == "/api/items" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def backend_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeBackend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_page_lists_the_backend_items(shop_app, backend_url):
    client = shop_app.create_app({"APP_VERSION": "t-front", "BACKEND_URL": backend_url}).test_client()
    reply = client.get("/")
    page = reply.get_data(as_text=True)
    assert reply.status_code == 200
    assert "<li>Espresso cup: 8.50</li>" in page and "<li>Kettle: 42.00</li>" in page
    assert "version t-front" in page


def test_page_says_when_the_backend_is_down(shop_app):
    client = shop_app.create_app({"BACKEND_URL": "http://127.0.0.1:9"}).test_client()
    reply = client.get("/")
    assert reply.status_code == 502
    assert "catalogue is unavailable" in reply.get_data(as_text=True)


def test_health_and_metrics(shop_app):
    client = shop_app.create_app({"APP_VERSION": "t-front"}).test_client()
    assert client.get("/health").get_json()["version"] == "t-front"
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "http_request_duration_seconds" in metrics and "process_resident_memory_bytes" in metrics


def test_error_fault_keeps_health_up(shop_app, backend_url):
    client = shop_app.create_app({"BACKEND_URL": backend_url, "FAULT_ERROR_RATE": 1.0}).test_client()
    assert client.get("/").status_code == 500
    assert client.get("/health").status_code == 200
