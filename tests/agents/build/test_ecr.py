"""Images to ECR: the repository and the login against a real moto_server, the push with those
credentials against a real registry that demands them (Debian's docker-registry with htpasswd).

moto cannot receive a pushed image, and ECR's hosts are out of reach here: the push half runs against a
local registry whose only account is the user and password moto's ``GetAuthorizationToken`` returned.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # bcrypt hashes for the registry's htpasswd (no htpasswd binary on these machines)

from agents.build.ecr import ecr_region, ensure_repository, login, push_auth
from agents.build.image import PushFailed, push_image
from agents.deploy.targets.ecs.aws import Aws
from orchestra.errors import StageFailed
from tests.support.docker_services import DockerEnv
from tests.support.moto import aws_env, client, moto_server
from tests.support.services import free_port, port_open, wait_for

REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url, aws_env(url):
        yield url


def test_a_missing_repository_is_created_once_and_the_login_is_for_the_registry(moto_url: str) -> None:
    aws = Aws("us-east-1")
    auth = push_auth(REGISTRY, f"{REGISTRY}/shop-web", aws=aws)
    ecr = client(moto_url, "ecr")
    repo = ecr.describe_repositories(repositoryNames=["shop-web"])["repositories"][0]
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    assert auth == {"username": "AWS", "password": "123456789012-auth-token", "serveraddress": REGISTRY}
    before = dict(aws.stats.by_call)
    assert push_auth(REGISTRY, f"{REGISTRY}/shop-web", aws=aws) == auth  # exists now: not created again
    assert aws.stats.by_call["ecr:CreateRepository"] == before["ecr:CreateRepository"] == 1
    assert len(ecr.describe_repositories()["repositories"]) == 1
    aws.close()


def test_a_registry_that_is_not_ecr_needs_no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens: no call made
    assert push_auth("127.0.0.1:5050", "127.0.0.1:5050/shop-web") is None
    assert ecr_region("registry.example.com") is None and ecr_region(REGISTRY) == "us-east-1"
    assert ecr_region("123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.example") is None


def test_without_credentials_the_push_says_how_to_give_them(moto_url: str, monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StageFailed, match="no AWS credentials for ecr:DescribeRepositories") as caught:
        push_auth(REGISTRY, f"{REGISTRY}/shop-web")
    assert "AWS_ACCESS_KEY_ID" in str(caught.value)


@contextmanager
def _registry_with_password(user: str, password: str) -> Iterator[str]:
    """Debian's docker-registry on loopback that accepts only ``user``/``password`` (htpasswd, bcrypt)."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="orchestra-registry-auth-") as tmp:
        (Path(tmp) / "htpasswd").write_text(f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
        (Path(tmp) / "config.yml").write_text(
            f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {tmp}/data\n"
            f"auth:\n  htpasswd:\n    realm: orchestra\n    path: {tmp}/htpasswd\n"
            f"http:\n  addr: 127.0.0.1:{port}\n")
        with open(Path(tmp) / "registry.log", "wb") as log:
            proc = subprocess.Popen([binary, "serve", f"{tmp}/config.yml"], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: port_open(port), what=f"docker-registry with htpasswd on port {port}")
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(10)


@pytest.mark.docker
def test_the_push_carries_the_ecr_login_and_a_registry_refuses_it_without(
        moto_url: str, docker_env: DockerEnv) -> None:
    aws = Aws("us-east-1")
    ensure_repository(aws, "shop-web", REGISTRY)
    ecr_login = login(aws, REGISTRY)
    aws.close()
    with _registry_with_password(ecr_login["username"], ecr_login["password"]) as local, \
            docker_env.connected() as engine:
        repository = f"{local}/shop-web"
        engine.images.get(docker_env.base_image).tag(repository, "v1")
        try:
            with pytest.raises(PushFailed, match="no basic auth credentials|unauthorized|authentication required"):
                push_image(engine, repository, "v1")
            with pytest.raises(PushFailed):
                push_image(engine, repository, "v1", {**ecr_login, "password": "wrong", "serveraddress": local})
            digest = push_image(engine, repository, "v1", {**ecr_login, "serveraddress": local})
            assert digest.startswith("sha256:")
        finally:
            try:
                engine.images.remove(f"{repository}:v1")
            except docker.errors.APIError:
                pass
