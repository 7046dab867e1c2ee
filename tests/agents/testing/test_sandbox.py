"""Untrusted code runs in a box: a service's tests try to get out, and find nothing to get out to.

The hostile repository's tests read the environment for REDIS_URL and tokens, write into the shared
virtualenv, the shared cache and their own source, and connect to Redis and to a listener on
127.0.0.1. Each attack test passes only when its attack fails; the host then checks, on its own side,
that nothing arrived. The same tests run without the sandbox show the attacks are real.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from agents.build.image import BuildFailed, build_image, context_tar
from agents.context import AgentContext
from agents.testing import sandbox
from agents.testing.stage import test_service as run_service_tests
from agents.testing.testgen import generate_tests
from agents.testing.venvs import ensure_venv, run_python
from orchestra.config import load_config
from orchestra.errors import OrchestraError
from orchestra.events import EventBus
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Run
from tests.support.docker_services import DockerEnv
from tests.support.files import write_files

pytestmark = pytest.mark.docker
LEGACY = Path(__file__).resolve().parents[2] / "fixtures" / "legacy_repo"

ATTACKS = '''\
import os
import socket
import sys
from pathlib import Path

import pytest

CACHE = Path({cache!r})
REDIS_PORT = {redis_port}
LISTENER_PORT = {listener_port}


def test_the_environment_holds_no_credentials():
    names = [k for k in os.environ if any(w in k for w in ("REDIS", "TOKEN", "SECRET", "KEY", "PASSWORD"))]
    values = [k for k, v in os.environ.items() if {password!r} in v or "xoxb-" in v or "ghp_" in v]
    assert names == [] and values == []


def test_the_shared_virtualenv_cannot_be_changed():
    with pytest.raises(OSError):
        (Path(sys.prefix) / "poison.pth").write_text("import os")


def test_writes_into_the_shared_cache():
    """Whether this lands is checked from outside: in the box it may only reach a throwaway layer."""
    try:
        (CACHE / "poison").write_text("x")
    except OSError:
        pass


def test_its_own_source_cannot_be_changed():
    with pytest.raises(OSError):
        (Path(__file__).parent / "poison.py").write_text("x")


def test_redis_on_loopback_is_out_of_reach():
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=2).close()


def test_a_listener_on_loopback_is_out_of_reach():
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", LISTENER_PORT), timeout=2).close()
'''


@pytest.fixture
def boxed(settings: Settings, docker_env: DockerEnv) -> Settings:
    return settings.with_(sandbox="docker", docker_host=docker_env.url, base_image=docker_env.base_image)


class Listener:
    """A TCP listener on 127.0.0.1 that counts who connects."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    listening = Listener()
    yield listening
    listening.close()


def hostile_repo(root: Path, settings: Settings, listener: Listener) -> Path:
    host, port = settings.redis_url.rpartition("@")[2].split("/")[0].split(":")
    password = settings.redis_url.split("@")[0].rpartition(":")[2]
    write_files(root, {
        "devops_orchestra.yaml": "project:\n  name: hostile\ndeployment:\n  services:\n"
                                 "    - name: svc\n      path: svc\n",
        "svc/requirements.txt": "",
        "svc/app.py": "def add(a, b):\n    return a + b\n",
        "svc/tests/test_app.py": "from app import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n\n\n"
                                 "def test_add_wrong():\n    assert add(1, 1) == 3\n",
        "svc/tests/test_attacks.py": ATTACKS.format(cache=str(settings.cache), redis_port=int(port),
                                                    listener_port=listener.port, password=password),
        "svc/conftest.py": "import sys, os\nsys.path.insert(0, os.path.dirname(__file__))\n",
    })
    return root


def _ctx(repo: Path, settings: Settings, redis: Redis) -> AgentContext:
    run = Run(requested_by="U0MALLORY", repo=str(repo), env="staging")
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                        config=load_config(repo), actor="test")


def _venv_files(python: Path) -> set[str]:
    home = python.parent.parent
    return {str(p.relative_to(home)) for p in home.rglob("*")}


def test_a_hostile_test_suite_finds_nothing_and_its_results_are_still_reported(
        boxed: Settings, redis: Redis, listener: Listener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What the worker process itself holds: none of it may reach the box.
    monkeypatch.setenv("REDIS_URL", boxed.redis_url)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-0000-worker-token")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_workerworkerworkerworkerworker0000")
    repo = hostile_repo(tmp_path / "hostile", boxed, listener)
    python = ensure_venv(repo / "svc", boxed)
    before = _venv_files(python)

    started = time.monotonic()
    result = run_service_tests(_ctx(repo, boxed, redis), "svc")
    elapsed = time.monotonic() - started

    assert sandbox.is_sandboxed(python)
    assert (result.passed, result.failed, result.errors) == (7, 1, 0), result
    failure = result.failures[0]
    assert failure.test.endswith("test_add_wrong") and failure.file == "tests/test_app.py" and failure.line == 8
    assert result.coverage is not None and result.coverage > 0  # the reports came out of the box
    assert listener.accepted == 0
    assert not (boxed.cache / "poison").exists() and not (repo / "svc" / "tests" / "poison.py").exists()
    assert _venv_files(python) == before
    assert elapsed < 30


def test_the_same_attacks_succeed_without_the_sandbox(settings: Settings, redis: Redis, listener: Listener,
                                                      tmp_path: Path) -> None:
    """The attack tests are real: on the host they reach the listener and poison the cache."""
    repo = hostile_repo(tmp_path / "hostile", settings, listener)
    poisoned = ensure_venv(repo / "svc", settings).parent.parent / "poison.pth"
    try:
        result = run_service_tests(_ctx(repo, settings, redis), "svc")
    finally:
        poisoned.unlink(missing_ok=True)  # the session's shared host virtualenv, for the tests after this one

    failed = {f.test.rpartition("::")[2] for f in result.failures}
    assert {"test_a_listener_on_loopback_is_out_of_reach",
            "test_redis_on_loopback_is_out_of_reach", "test_its_own_source_cannot_be_changed",
            "test_the_shared_virtualenv_cannot_be_changed"} <= failed
    assert listener.accepted >= 1 and (settings.cache / "poison").exists()
    (settings.cache / "poison").unlink()


def test_a_test_that_runs_past_its_time_is_killed_with_its_container(boxed: Settings, tmp_path: Path,
                                                                     docker_env: DockerEnv) -> None:
    (tmp_path / "svc").mkdir()
    python = ensure_venv(tmp_path / "svc", boxed)
    started = time.monotonic()
    with pytest.raises(OrchestraError, match="did not finish within 2s in the sandbox"):
        run_python(python, ["-c", "import time; time.sleep(60)"], cwd=tmp_path / "svc", settings=boxed, timeout=2)
    assert time.monotonic() - started < 15
    with docker_env.connected() as client:
        assert client.containers.list(all=True, filters={"label": sandbox.LABEL}) == []


def test_memory_processes_and_cpu_are_limited(boxed: Settings, tmp_path: Path) -> None:
    (tmp_path / "svc").mkdir()
    python = ensure_venv(tmp_path / "svc", boxed)
    hog = run_python(python, ["-c", "x = bytearray(2 * 1024 ** 3); print('allocated')"], cwd=tmp_path / "svc",
                     settings=boxed, timeout=60)
    forks = run_python(python, ["-c", "import os\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
                                      "            import time; time.sleep(30)\n        n += 1\n"
                                      "except OSError:\n    print('stopped at', n)\n"],
                       cwd=tmp_path / "svc", settings=boxed, timeout=60)
    quota = ("import pathlib; v2 = pathlib.Path('/sys/fs/cgroup/cpu.max'); v1 = pathlib.Path('/sys/fs/cgroup/cpu')\n"
             "print(v2.read_text() if v2.exists() else (v1 / 'cpu.cfs_quota_us').read_text().strip() + ' '"
             " + (v1 / 'cpu.cfs_period_us').read_text())")
    cpus = run_python(python, ["-c", quota], cwd=tmp_path / "svc", settings=boxed, timeout=60)

    assert hog.returncode != 0 and "allocated" not in hog.stdout
    assert "stopped at" in forks.stdout and int(forks.stdout.split()[-1]) < sandbox.PIDS
    assert cpus.stdout.split()[:2] == ["100000", "100000"]  # one CPU: 100 ms per 100 ms period


def test_generated_tests_are_proven_in_the_box(boxed: Settings, tmp_path: Path) -> None:
    """Probing functions, running candidates and their mutants: every run of the service's code is boxed."""
    repo = Path(shutil.copytree(LEGACY, tmp_path / "legacy_repo"))
    python = ensure_venv(repo, boxed)
    report = generate_tests(repo, python=python, settings=boxed, out_dir=tmp_path / "offer")

    assert sandbox.is_sandboxed(python)
    assert report.coverage_after >= 90.0 and len(report.kept) >= 8 and report.mutation_score >= 0.75


def test_an_image_build_step_is_held_to_its_memory_limit(docker_env: DockerEnv, tmp_path: Path) -> None:
    dockerfile = f'FROM {docker_env.base_image}\nRUN python3 -c "bytearray(3 * 1024 ** 3)"\n'
    with docker_env.connected() as client, pytest.raises(BuildFailed) as failed:
        build_image(client, context_tar(tmp_path, dockerfile), "orchestra-test/hog:1")
    assert "returned a non-zero code" in failed.value.message


def test_the_sandbox_setting_is_docker_unless_told_and_refuses_anything_else() -> None:
    assert Settings.from_env({}).sandbox == "docker"
    assert Settings.from_env({"ORCHESTRA_SANDBOX": "none"}).sandbox == "none"
    with pytest.raises(OrchestraError, match="ORCHESTRA_SANDBOX='chroot' is not one of docker, none"):
        Settings.from_env({"ORCHESTRA_SANDBOX": "chroot"})


def test_without_a_docker_engine_the_stage_says_how_to_get_one(settings: Settings, tmp_path: Path) -> None:
    boxed = settings.with_(sandbox="docker", docker_host=f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(OrchestraError) as missing:
        ensure_venv(tmp_path, boxed)
    assert "needs the Docker engine" in missing.value.message
    assert "DOCKER_HOST" in str(missing.value.hint) and "ORCHESTRA_SANDBOX=none" in str(missing.value.hint)


def test_orchestra_run_tests_the_demo_in_the_box_and_names_the_failing_test(boxed: Settings, tmp_path: Path,
                                                                            docker_env: DockerEnv) -> None:
    """The real path: `orchestra run` with its burst workers, ORCHESTRA_SANDBOX=docker from the environment."""
    from tests.jobs.conftest import orchestra_env

    repo = tmp_path / "shop"
    subprocess.run([str(PROJECT_ROOT / "scripts" / "make-demo-repo"), str(repo)], check=True, capture_output=True)
    env = {**orchestra_env(boxed), "DOCKER_HOST": docker_env.url, "ORCHESTRA_BASE_IMAGE": docker_env.base_image}
    result = subprocess.run([sys.executable, "-m", "cli", "run", "--repo", str(repo), "--ref", "demo/failing-test",
                             "--service", "backend", "--validate-only"], env=env, cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=600)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "test_catalogue_has_four_items" in result.stdout
    venvs = list((boxed.cache / "venvs").glob("box-*"))
    assert venvs and all(sandbox.is_sandboxed(v / "bin" / "python") for v in venvs)


def test_testing_timeout_from_the_configuration_stops_a_slow_suite(settings: Settings, redis: Redis,
                                                                   tmp_path: Path) -> None:
    repo = write_files(tmp_path / "slow", {
        "devops_orchestra.yaml": "project:\n  name: slow\ntesting:\n  timeout: 3s\ndeployment:\n  services:\n"
                                 "    - name: svc\n      path: svc\n",
        "svc/requirements.txt": "",
        "svc/test_slow.py": "import time\n\n\ndef test_slow():\n    time.sleep(60)\n",
    })
    ensure_venv(repo / "svc", settings)
    started = time.monotonic()
    with pytest.raises(OrchestraError, match="did not finish within 3s"):
        run_service_tests(_ctx(repo, settings, redis), "svc")
    assert time.monotonic() - started < 30


def _two_tests(root: Path, testing: str) -> Path:
    return write_files(root, {
        "devops_orchestra.yaml": f"project:\n  name: two\ntesting:\n{testing}deployment:\n  services:\n"
                                 "    - name: svc\n      path: svc\n",
        "svc/requirements.txt": "",
        "svc/test_two.py": "def test_smoke():\n    pass\n\n\ndef test_broken():\n    assert False\n",
    })


def test_testing_command_adds_its_pytest_arguments(settings: Settings, redis: Redis, tmp_path: Path) -> None:
    repo = _two_tests(tmp_path / "two", "  command: python -m pytest -q -k 'smoke or nothing'\n")
    result = run_service_tests(_ctx(repo, settings, redis), "svc")
    assert (result.passed, result.failed) == (1, 0), result
    everything = run_service_tests(_ctx(_two_tests(tmp_path / "all", "  enabled: true\n"), settings, redis), "svc")
    assert (everything.passed, everything.failed) == (1, 1), everything


@pytest.mark.parametrize("testing, refusal", [
    ("  command: npm test\n", "testing.command `npm test` is not a pytest command"),
    ("  command: python -c 'import os'; pytest\n", "is not a pytest command"),
    ("  framework: jest\n", "testing.framework `jest` does not run Python services"),
])
def test_a_testing_field_the_python_stage_cannot_honour_is_refused(settings: Settings, redis: Redis, tmp_path: Path,
                                                                   testing: str, refusal: str) -> None:
    repo = _two_tests(tmp_path / "two", testing)
    with pytest.raises(OrchestraError, match=refusal.replace("(", r"\(")) as caught:
        run_service_tests(_ctx(repo, settings, redis), "svc")
    assert caught.value.hint
