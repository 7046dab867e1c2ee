"""The Terraform (or OpenTofu) binary, run the way the iac stage needs it.

* Which binary: ``terraform`` on PATH, else ``tofu``; a clear error when neither is there.
* Where providers come from: the operator's CLI configuration (``TF_CLI_CONFIG_FILE``, when the file
  exists), else the filesystem mirror ``ORCHESTRA_TERRAFORM_MIRROR`` (``scripts/terraform-mirror`` lays one
  out; a CLI configuration naming it is written next to the run's files), else the public registry.
* What it sees: the tool environment, the AWS credentials and endpoint of the standard chain (as boto3
  sees them in the deploy targets), no other variable of this process.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from agents.iac import hcl
from agents.tools import run_in_group
from orchestra.errors import StageFailed
from orchestra.settings import Settings

BINARIES = ("terraform", "tofu")
COMMAND_TIMEOUT_S = 300
STAGE_BUDGET_S = 540  # all of a stage's Terraform commands: within the iac job's own limit (jobs/graph.py: 600 s)
STOP_GRACE_S = 5  # after SIGTERM, before SIGKILL: Terraform writes its state and releases its lock
AWS_PREFIX = "AWS_"  # credentials, region, profile and endpoint: the standard chain, as boto3 reads it


@dataclass
class Terraform:
    """One binary in one working folder, with the environment it runs in."""

    binary: str
    folder: Path
    env: dict[str, str] = field(default_factory=dict)
    version: str = ""
    providers: str = "the public registry"  # where providers come from, said in the thread
    deadline: float = float("inf")  # time.monotonic() by which every command must have finished

    def run(self, *args: str, timeout: float | None = None,
            exclusive: bool = False) -> subprocess.CompletedProcess[str]:
        """``terraform <args>`` in the folder. Past ``timeout`` (default COMMAND_TIMEOUT_S) Terraform and its
        provider plugins (one process group) are stopped, and the failure names the command. ``exclusive``
        (``init``, which may write the shared plugin cache) waits until no other command uses the cache."""
        limit = min(COMMAND_TIMEOUT_S if timeout is None else timeout, self.deadline - time.monotonic())
        if limit <= 0:
            raise StageFailed(f"no time left for `{self.name} {args[0]}`: the stage's Terraform commands may take "
                              f"{STAGE_BUDGET_S}s in all",
                              hint="check that the AWS endpoint answers; nothing was changed")
        with self._plugin_cache(exclusive):
            return self._run(args, limit)

    @contextmanager
    def _plugin_cache(self, exclusive: bool) -> Iterator[None]:
        """A lock on the plugin cache the workers share: Terraform's own use of it is not safe at once (an
        init rewriting the AWS provider while another run's validate reads it fails the checksum)."""
        cache = self.env.get("TF_PLUGIN_CACHE_DIR")
        if not cache:
            yield
            return
        with open(Path(cache) / ".orchestra.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _run(self, args: tuple[str, ...], limit: float) -> subprocess.CompletedProcess[str]:
        # Output goes to unnamed files, not pipes: Terraform outliving a killed worker must still be able to
        # write (a Go program writing to a broken pipe dies at once, leaving its state lock behind).
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            try:
                done = run_in_group([self.binary, *args], cwd=self.folder, env=self.env, timeout=limit,
                                    grace_s=STOP_GRACE_S, stdout=out, stderr=err,
                                    preexec_fn=_interrupt_when_orphaned)
            except subprocess.TimeoutExpired as exc:
                raise StageFailed(f"`{self.name} {args[0]}` did not finish within {limit:.0f}s and was stopped",
                                  hint="check that the AWS endpoint answers; nothing was changed") from exc
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(done.args, done.returncode, out.read(), err.read())

    @property
    def name(self) -> str:
        return Path(self.binary).name


def _interrupt_when_orphaned() -> None:
    """In the child, before Terraform starts: SIGINT it when the worker that started it dies (a SIGKILL
    reaches no ``finally``). Terraform's own session would otherwise outlive the worker; on SIGINT it stops
    gracefully: in-flight operations end, the state is written and its lock released."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform == "linux" else None


def find_binary(path: str | None = None) -> str:
    """``terraform`` or ``tofu`` on ``path`` (the process's PATH by default)."""
    for name in BINARIES:
        found = shutil.which(name, path=path)
        if found:
            return found
    raise StageFailed("neither `terraform` nor `tofu` is on the worker's PATH",
                      hint="install Terraform 1.x (or OpenTofu) on the worker; nothing was changed")


def prepare(settings: Settings, folder: Path, scratch: Path, *, variables: dict[str, str] | None = None,
            binary: str | None = None, data_dir: Path | None = None) -> Terraform:
    """A :class:`Terraform` for ``folder``; ``scratch`` holds its CLI configuration. ``data_dir`` moves the
    ``.terraform`` folder (installed providers, the backend) out of ``folder``: a repository's own
    ``.terraform`` may hold a provider binary of its choosing, and is never used."""
    tf = Terraform(binary or find_binary(settings.tool_env.get("PATH")), folder,
                   deadline=time.monotonic() + STAGE_BUDGET_S)
    tf.env = {**settings.tool_env, **{k: v for k, v in os.environ.items() if k.startswith(AWS_PREFIX)},
              "TF_IN_AUTOMATION": "1", "TF_INPUT": "0", "CHECKPOINT_DISABLE": "1",
              **{f"TF_VAR_{k}": v for k, v in (variables or {}).items()}}
    plugins = settings.cache / "terraform-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    tf.env["TF_PLUGIN_CACHE_DIR"] = str(plugins)  # one unpacked provider for every run, not one per run
    if data_dir is not None:
        tf.env["TF_DATA_DIR"] = str(data_dir)
    cli_config, tf.providers = cli_configuration(settings, scratch)
    tf.env["TF_CLI_CONFIG_FILE"] = str(cli_config)
    tf.version = _version(tf)
    return tf


def cli_configuration(settings: Settings, scratch: Path) -> tuple[Path, str]:
    """The CLI configuration file to use and where providers come from."""
    own = settings.terraform_cli_config
    if own is not None and own.is_file():
        return own, f"the CLI configuration {own}"
    mirror = settings.terraform_mirror
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / "terraform.rc"
    if mirror is None:
        # Said outright: without a provider_installation block Terraform also installs providers from implied
        # local mirrors, among them terraform.d/plugins in the working folder, which a repository can fill.
        path.write_text("provider_installation {\n  direct {}\n}\n")
        return path, "the public registry"
    if not mirror.is_dir():
        raise StageFailed(f"ORCHESTRA_TERRAFORM_MIRROR names {mirror}, which is not a directory",
                          hint="run scripts/terraform-mirror to lay the mirror out there, or unset it")
    path.write_text("provider_installation {\n  filesystem_mirror {\n"
                    f"    path    = {hcl.string(str(mirror.resolve()))}\n"
                    '    include = ["registry.terraform.io/*/*"]\n  }\n}\n')
    return path, f"the mirror {mirror}"


def _version(tf: Terraform) -> str:
    done = tf.run("version", "-json", timeout=30)
    try:
        return str(json.loads(done.stdout)["terraform_version"])
    except (ValueError, KeyError) as exc:
        raise StageFailed(f"`{tf.binary} version -json` did not answer with a version: "
                          f"{(done.stderr or done.stdout).strip()[:200]}",
                          hint="install Terraform 1.x (or OpenTofu) on the worker") from exc
