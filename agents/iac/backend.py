"""Where Terraform keeps state: ``infrastructure.backend`` from devops_orchestra.yaml, wired into ``init``.

* Not set: the local backend, one state per project and environment under the worker's workdir
  (``iac-state/<project>/<env>/terraform.tfstate``) for generated Terraform, and for a repository's own
  Terraform that leaves the backend to the bot with an empty ``backend "local" {}`` (as the generated
  ``provider.tf`` does: the offered files, once committed, keep the state they had); other Terraform keeps
  the backend it declares.
* ``s3``: bucket, key prefix, region and a DynamoDB table for locking; the state of project P in environment
  E is ``<key_prefix>P/E/terraform.tfstate``. Generated Terraform, and Terraform leaving the backend to the
  bot, get a ``backend "s3" {}`` block (an override file beside theirs); other Terraform must declare
  ``backend "s3" {}`` itself, and is refused otherwise (its own backend would silently be used instead of the
  configured one).
  The settings reach ``init`` as a ``-backend-config`` file in the run's folder. With an AWS endpoint of
  its own (``AWS_ENDPOINT_URL``: a local stand-in for AWS) S3, DynamoDB and STS are reached there, path-style.

State itself never leaves Terraform: nothing here reads it, and only the bucket and key are said.
"""
from __future__ import annotations

import re
from pathlib import Path

from agents.iac import checks, hcl
from agents.iac.terraform import Terraform
from orchestra.config.sections import S3Backend
from orchestra.errors import StageFailed

OVERRIDE_FILE = "orchestra_backend_override.tf"  # Terraform merges *_override.tf over the other files
CONFIG_FILE = "backend.s3.tfbackend"
_S3_BLOCK = re.compile(r'^\s*backend\s+"s3"\s*\{', re.MULTILINE)
_LEFT_TO_US = re.compile(r'^\s*backend\s+"local"\s*\{\s*\}', re.MULTILINE)  # an empty local block
_COMMENT = re.compile(r"(#|//).*$|/\*.*?\*/", re.MULTILINE | re.DOTALL)


def local_state(workdir: Path, project: str, env: str) -> Path:
    """The local state of a project's environment when the bot chooses the backend and none is configured."""
    return workdir / "iac-state" / project / env / "terraform.tfstate"


def state_key(s3: S3Backend, project: str, env: str) -> str:
    return f"{s3.key_prefix}{project}/{env}/terraform.tfstate"


def init(tf: Terraform, s3: S3Backend | None, *, project: str, env: str, scratch: Path, local_state: Path | None,
         generated: bool) -> str:
    """``terraform init`` with the configured backend; where the state is, for the thread."""
    if s3 is None:
        checks.init(tf, state=local_state)
        return "state: local" + (f" ({local_state.parent.name}/{local_state.name} in the workdir)"
                                 if local_state is not None else " (the repository's own backend)")
    if generated:
        (tf.folder / OVERRIDE_FILE).write_text('terraform {\n  backend "s3" {}\n}\n')
    elif not declares_s3(tf.folder):
        raise StageFailed("infrastructure.backend.s3 is set, but the Terraform here declares no `backend \"s3\" {}` "
                          "block, so it would keep its state elsewhere",
                          hint='add `terraform { backend "s3" {} }` to it (bucket, key, region and table come from '
                               "the configuration), or remove infrastructure.backend; nothing was planned")
    key = state_key(s3, project, env)
    scratch.mkdir(parents=True, exist_ok=True)
    config = scratch / CONFIG_FILE
    config.write_text(backend_config(s3, key, tf.env.get("AWS_ENDPOINT_URL", "")))
    done = tf.run("init", "-input=false", "-no-color", "-reconfigure", f"-backend-config={config}", exclusive=True)
    if done.returncode != 0:
        raise StageFailed(f"`{tf.name} init` with the S3 backend (s3://{s3.bucket}/{key}, locks in "
                          f"{s3.dynamodb_table}) failed: {checks._last_error(done.stderr or done.stdout)}",
                          hint="check that the bucket and the DynamoDB table (hash key LockID, a string) exist in "
                               f"{s3.region} and that the worker's AWS credentials may use them; nothing was planned")
    return f"state: s3://{s3.bucket}/{key} (locked in DynamoDB {s3.dynamodb_table})"


def declares_s3(folder: Path) -> bool:
    """Whether a ``*.tf`` file directly in ``folder`` (Terraform's root module) declares ``backend "s3"``."""
    return _declares(folder, _S3_BLOCK)


def left_to_us(folder: Path) -> bool:
    """Whether the root module in ``folder`` leaves its backend to the bot: an empty ``backend "local" {}``,
    whose path (or the S3 backend configured instead) is given at init, as for generated Terraform."""
    return _declares(folder, _LEFT_TO_US)


def _declares(folder: Path, block: re.Pattern[str]) -> bool:
    return any(block.search(_COMMENT.sub("", path.read_text(errors="replace")))
               for path in sorted(folder.glob("*.tf")) if path.is_file())


def backend_config(s3: S3Backend, key: str, endpoint: str) -> str:
    """The ``-backend-config`` file: every value through :func:`hcl.value`."""
    pairs = [("bucket", hcl.value(s3.bucket)), ("key", hcl.value(key)), ("region", hcl.value(s3.region)),
             ("dynamodb_table", hcl.value(s3.dynamodb_table)), ("encrypt", "true")]
    if endpoint:
        pairs += [("use_path_style", "true"), ("skip_credentials_validation", "true"),
                  ("skip_requesting_account_id", "true"), ("skip_metadata_api_check", "true"),
                  ("skip_region_validation", "true"),
                  ("endpoints", hcl.value({"s3": endpoint, "dynamodb": endpoint, "sts": endpoint}))]
    return hcl.attributes(pairs, "") + "\n"
