"""The iac stage on the example: generate + validate + plan time, beside a bare `terraform validate` of the same
files (the anchor); prints a table.

    .venv/bin/python bench/bench_iac.py [--rounds N]

examples/shop with its services on ``runtime: ecs``, against a real moto_server on loopback, the AWS provider
from the filesystem mirror scripts/terraform-mirror lays out (no registry). Each round is a fresh run of the
stage: generate (templates to files), then the stage's own steps (terraform version, fmt -check, init,
validate, the checkov policy scan, plan -out and show -json), timed as a whole and with the policy scan alone,
then the same stage again for another run, whose scan is checkov's report of the same files from the cache.
The anchor is ``terraform validate`` by hand in a folder of the same files already initialised (what a person
would run), and ``terraform init`` there, once per round. moto answers in milliseconds: a plan against AWS
itself waits for AWS's answers too.

``--apply-rounds N`` (default 1; 0 skips them) adds the iac_apply stage's rows: a fresh plan of the shop (37
resources to add) applied by ``agents.iac.apply.run`` as after an approval (the workspace lock, the digest
check, ``terraform apply`` of the saved plan, ``terraform output -json``), then ``terraform destroy`` by hand,
which leaves moto empty for the next round. The ALB is most of the apply: the AWS provider waits for it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from redis import Redis  # noqa: E402

from agents.context import AgentContext  # noqa: E402
from agents.iac import apply, generate, policy  # noqa: E402
from agents.iac import stage as iac  # noqa: E402
from orchestra.config import load_config  # noqa: E402
from orchestra.events import EventBus  # noqa: E402
from orchestra.settings import Settings  # noqa: E402
from orchestra.store import Run, RunStore  # noqa: E402
from tests.support.moto import aws_env, moto_server  # noqa: E402
from tests.support.services import redis_server  # noqa: E402

SHOP = PROJECT_ROOT / "examples" / "shop"


def mirror() -> Path:
    done = subprocess.run([str(PROJECT_ROOT / "scripts" / "terraform-mirror")], capture_output=True, text=True,
                          timeout=900, check=True)
    return Path(done.stdout.strip().splitlines()[-1])


def one_round(tmp: Path, settings: Settings, redis: Redis, samples: dict[str, list[float]]) -> None:
    repo = tmp / "shop"
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(SHOP, repo)
    config = repo / "devops_orchestra.yaml"
    config.write_text(config.read_text().replace("runtime: docker", "runtime: ecs"))
    run = RunStore(redis).create(Run(requested_by="bench", repo=str(repo), env="staging"))
    ctx = AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                       config=load_config(repo), actor="iac")

    start = time.perf_counter()
    files = generate.render(generate.spec_for(ctx.config, "staging"))
    generate.write(files, tmp / "generated")
    samples["generate (templates to files)"].append(time.perf_counter() - start)

    shutil.rmtree(settings.cache / "checkov", ignore_errors=True)  # checkov's report cache: this run scans
    start = time.perf_counter()
    result = iac.run(ctx)
    samples["the stage: generate, fmt, init, validate, checkov, plan"].append(time.perf_counter() - start)
    assert result.passed, result.summary
    again = AgentContext(run=RunStore(redis).create(Run(requested_by="bench", repo=str(repo), env="staging")),
                         settings=settings, redis=redis, bus=EventBus(redis), workspace=repo, config=ctx.config,
                         actor="iac")
    start = time.perf_counter()
    result = iac.run(again)
    samples["the same stage again: checkov's report from the cache"].append(time.perf_counter() - start)
    assert result.passed, result.summary

    start = time.perf_counter()
    policy.run_checkov(tmp / "generated", policy.terraform_files(tmp / "generated"), "generated", tmp / "scratch",
                       binary=policy.checkov_binary(), timeout=policy.TIMEOUT_S)
    samples["  of which the policy scan alone (checkov)"].append(time.perf_counter() - start)

    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp), "CHECKPOINT_DISABLE": "1",
           "TF_CLI_CONFIG_FILE": str(settings.run_dir(run.id) / "infrastructure" / "terraform.rc"),
           "TF_PLUGIN_CACHE_DIR": str(settings.cache / "terraform-plugins"),
           "TF_DATA_DIR": str(tmp / "anchor-data")}
    shutil.rmtree(tmp / "anchor-data", ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(["terraform", "init", "-input=false", "-backend=false"], cwd=tmp / "generated", env=env,
                   capture_output=True, check=True, timeout=300)
    samples["anchor: terraform init (by hand)"].append(time.perf_counter() - start)
    start = time.perf_counter()
    subprocess.run(["terraform", "validate"], cwd=tmp / "generated", env=env, capture_output=True, check=True,
                   timeout=300)
    samples["anchor: terraform validate (by hand)"].append(time.perf_counter() - start)


def apply_round(tmp: Path, settings: Settings, redis: Redis, url: str, samples: dict[str, list[float]]) -> None:
    """The shop planned on an empty moto, applied as iac_apply applies it, then destroyed by hand."""
    repo = tmp / "shop-apply"
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(SHOP, repo)
    config = repo / "devops_orchestra.yaml"
    config.write_text(config.read_text().replace("runtime: docker", "runtime: ecs"))
    run = RunStore(redis).create(Run(requested_by="bench", repo=str(repo), env="staging"))
    ctx = AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                       config=load_config(repo), actor="iac")
    assert iac.run(ctx).passed
    ctx.run = RunStore(redis).get(run.id)
    start = time.perf_counter()
    result = apply.run(ctx, approval=apply.Approval(apply.STAGE, "approved", "bench-approver", None))
    samples["iac_apply: the approved plan applied, outputs read"].append(time.perf_counter() - start)
    assert result.passed, result.summary
    folder = settings.run_dir(run.id) / "infrastructure"
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp), "CHECKPOINT_DISABLE": "1",
           "TF_CLI_CONFIG_FILE": str(folder / "terraform.rc"), "TF_VAR_aws_endpoint": url,
           "TF_PLUGIN_CACHE_DIR": str(settings.cache / "terraform-plugins"),
           **{k: v for k, v in os.environ.items() if k.startswith("AWS_")}}
    start = time.perf_counter()
    subprocess.run(["terraform", "destroy", "-auto-approve", "-input=false"], cwd=folder / "generated", env=env,
                   capture_output=True, check=True, timeout=600)
    samples["terraform destroy of the same (by hand)"].append(time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--apply-rounds", type=int, default=1)
    args = parser.parse_args()
    if shutil.which("terraform") is None:
        print("terraform is not on PATH", file=sys.stderr)
        return 2
    provider = mirror()
    samples: dict[str, list[float]] = {}
    for name in ("generate (templates to files)", "the stage: generate, fmt, init, validate, checkov, plan",
                 "the same stage again: checkov's report from the cache",
                 "  of which the policy scan alone (checkov)", "anchor: terraform init (by hand)",
                 "anchor: terraform validate (by hand)",
                 *(("iac_apply: the approved plan applied, outputs read", "terraform destroy of the same (by hand)")
                   if args.apply_rounds else ())):
        samples[name] = []
    with tempfile.TemporaryDirectory(prefix="bench-iac-") as tmp, moto_server() as url, \
            redis_server() as redis_url:
        settings = Settings.from_env().with_(redis_url=redis_url, workdir=Path(tmp) / "work",
                                             terraform_mirror=provider, terraform_cli_config=None)
        redis = Redis.from_url(redis_url)
        with aws_env(url):
            for _ in range(args.rounds):
                one_round(Path(tmp), settings, redis, samples)
            for _ in range(args.apply_rounds):
                apply_round(Path(tmp), settings, redis, url, samples)
    print(f"iac stage on examples/shop (runtime: ecs, 37 resources planned), {args.rounds} rounds "
          f"({args.apply_rounds} of apply), against moto_server on loopback")
    print(f"{'step':58} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, values in samples.items():
        print(f"{name:58} {statistics.median(values):9.2f} {min(values):7.2f} {max(values):7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
