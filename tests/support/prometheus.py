"""Debian's prometheus on a free loopback port, scraping targets the test chooses, every second."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agents.observability.metrics import Prometheus, Target, scrape_config, write_targets
from tests.support.services import free_port, wait_for


@dataclass
class PrometheusServer:
    """A running Prometheus: its client, and the file_sd file that lists its targets."""

    url: str
    targets_file: Path
    client: Prometheus

    def set_targets(self, targets: Iterable[Target]) -> None:
        """Replace the scrape targets (picked up within about a second)."""
        write_targets(self.targets_file, targets)

    def wait_scraped(self, targets: Iterable[Target], timeout: float = 15.0) -> None:
        """Wait until every target has been scraped successfully at least once."""
        for t in targets:
            query = f'up{{service="{t.service}",version="{t.version}"}} == 1'
            wait_for(lambda q=query: self.client.query(q), timeout=timeout, interval=0.2,
                     what=f"Prometheus scraping {t.service} {t.version} at {t.address}")


@contextmanager
def prometheus_server(targets: Iterable[Target] = (), *, interval: str = "1s",
                      targets_file: Path | None = None) -> Iterator[PrometheusServer]:
    """Start prometheus with storage in a temp dir; stop it after. ``targets_file``: a file_sd list
    someone else keeps up to date (default: one in the temp dir, set with ``set_targets``)."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus is not installed (apt-get install prometheus)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="orchestra-prom-") as tmp:
        root = Path(tmp)
        if targets_file is None:
            targets_file = root / "targets.json"
            write_targets(targets_file, targets)
        (root / "prometheus.yml").write_text(scrape_config(targets_file, interval=interval))
        log = (root / "prometheus.log").open("wb")
        proc = subprocess.Popen(  # noqa: S603
            [binary, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
            stdout=log, stderr=subprocess.STDOUT)
        server = PrometheusServer(f"http://127.0.0.1:{port}", targets_file,
                                  Prometheus(f"http://127.0.0.1:{port}"))
        try:
            wait_for(server.client.ready, timeout=20, interval=0.2, what=f"prometheus on port {port}")
            yield server
        finally:
            proc.terminate()
            proc.wait(timeout=15)
            log.close()
