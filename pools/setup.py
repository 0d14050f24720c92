"""Prepare a Prefect server for talkflow: work pools, GPU limits, the result-storage block.

Idempotent; run it once per server (and again after changing the pools):

    PREFECT_API_URL=http://prefect:4200/api TALKFLOW_STORE_URL=s3://bucket/talkflow \\
        python -m pools.setup all --gpu-classes a100,l4 --gpus a100=8,l4=2

Without Docker (one machine, a process worker runs every deployment from this checkout):

    python -m pools.setup all --process-pool local

prefect.yaml sends each deployment to the pools named by three Prefect variables that `all` sets
for the chosen infrastructure (--deploy-to), so `prefect deploy --all` only references pools
that exist: talkflow_cpu_pool, talkflow_gpu_pool (work pool names) and talkflow_code_dir (the
folder a run starts in: /opt/talkflow in the image, this checkout for process pools).

Sub-commands (docker/entrypoint.sh uses the small ones):
    all             pools (gpu-<class> per class, cpu, optional process pools), limits, block,
                    the deployment-target variables
    result-storage  only the RemoteFileSystem block the stages write results to
    env             print `export` lines: the Prefect result settings a worker and its runs need
    wait            wait until PREFECT_API_URL answers /health

Independent of the talkflow CLI; imports prefect only where a server is used.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pools.gpu_pool import (
    DEFAULT_DATA_ROOT_HOST,
    DEFAULT_IMAGE,
    DEFAULT_SHM_SIZE,
    PoolDefinition,
    gpu_limits,
    pool_definitions,
)


def run_env(settings=None) -> dict[str, str]:
    """What Prefect must know BEFORE it is imported to keep stage results in the store.

    Same rule as talkflow.runtime.configure_prefect_env, for processes where prefect is imported
    first (a worker, and `prefect flow-run execute` in a run's container or subprocess).
    """
    from talkflow.runtime import RESULT_BLOCK_SLUG
    from talkflow.settings import Settings

    s = settings or Settings()
    env = {"PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true"}
    if s.store_is_remote:
        env["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] = RESULT_BLOCK_SLUG
    else:
        env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = f"{s.store}/cache"
    return env


def api_url() -> str:
    url = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    if not url:
        raise SystemExit("PREFECT_API_URL is not set: point it at the server, e.g. "
                         "http://prefect-server:4200/api")
    return url


def wait_for_api(url: str | None = None, timeout_s: float = 120.0) -> float:
    """Seconds until GET <api>/health answered 200; SystemExit after timeout_s."""
    url = (url or api_url()).rstrip("/")
    t0 = time.monotonic()
    last = ""
    while time.monotonic() - t0 < timeout_s:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(1.0)
    raise SystemExit(f"Prefect API {url} did not answer /health within {timeout_s:.0f} s ({last}); start the "
                     "server (prefect server start) or set PREFECT_API_URL to a running one")


REPO_ROOT = Path(__file__).resolve().parents[1]
CODE_DIR_IN_IMAGE = "/opt/talkflow"  # docker/Dockerfile.worker copies the code there
DeployTo = Literal["docker", "process"]


def deploy_targets(
    deploy_to: DeployTo,
    *,
    gpu_classes: Iterable[str] = (),
    process_pools: Iterable[str] = (),
    code_dir: str | None = None,
    cpu_pool: bool = True,
    cpu_only: bool = False,
) -> dict[str, str]:
    """The Prefect variables prefect.yaml reads: which pools its deployments go to, and where
    a run finds the code. Raises ValueError when the chosen infrastructure has no pool.

    cpu_only: Docker without GPU pools; every deployment goes to the Docker `cpu` pool."""
    if deploy_to == "process":
        pools = list(process_pools)
        if not pools:
            raise ValueError("--deploy-to process needs a process pool: add --process-pool NAME")
        return {"talkflow_cpu_pool": pools[0], "talkflow_gpu_pool": pools[0],
                "talkflow_code_dir": code_dir or str(REPO_ROOT)}
    if deploy_to == "docker":
        classes = list(dict.fromkeys(gpu_classes))
        from pools.gpu_pool import CPU_POOL, gpu_pool_name

        if cpu_only and cpu_pool:
            return {"talkflow_cpu_pool": CPU_POOL, "talkflow_gpu_pool": CPU_POOL,
                    "talkflow_code_dir": code_dir or CODE_DIR_IN_IMAGE}
        if not classes:
            raise ValueError("--deploy-to docker needs a GPU pool: add --gpu-classes, e.g. a100,l4 "
                             "(or --cpu-only: every deployment on the Docker cpu pool)")

        gpu = gpu_pool_name(classes[0])  # without the Docker `cpu` pool, CPU flows run there too
        return {"talkflow_cpu_pool": CPU_POOL if cpu_pool else gpu, "talkflow_gpu_pool": gpu,
                "talkflow_code_dir": code_dir or CODE_DIR_IN_IMAGE}
    raise ValueError(f"deploy_to must be docker or process, not {deploy_to!r}")


def ensure_variables(values: Mapping[str, str]) -> dict[str, str]:
    from prefect.variables import Variable

    for name, value in values.items():
        Variable.set(name, value, overwrite=True)
    return dict(values)


def process_pool(name: str) -> PoolDefinition:
    from prefect.workers.process import ProcessWorker

    return PoolDefinition(
        name=name,
        type="process",
        base_job_template=ProcessWorker.get_default_base_job_template(),
        description="talkflow runs as subprocesses of a worker (no Docker)",
    )


def ensure_pools(client, pools: Iterable[PoolDefinition]) -> list[str]:
    """Create or update each pool (template, description, concurrency limit)."""
    from prefect.client.schemas.actions import WorkPoolCreate

    names = []
    for p in pools:
        client.create_work_pool(
            WorkPoolCreate(
                name=p.name,
                type=p.type,
                description=p.description,
                base_job_template=p.base_job_template,
                concurrency_limit=p.concurrency_limit,
            ),
            overwrite=True,
        )
        names.append(p.name)
    return names


def ensure_limits(client, limits: Mapping[str, int]) -> dict[str, int]:
    for name, slots in limits.items():
        client.upsert_global_concurrency_limit_by_name(name, slots)
    return dict(limits)


def ensure_result_storage() -> str | None:
    """Save the result-storage block (S3 store only); returns its slug, or None for local."""
    from talkflow.runtime import RESULT_BLOCK_SLUG
    from talkflow.runtime import ensure_result_storage as ensure
    from talkflow.settings import get_settings

    ensure()
    return RESULT_BLOCK_SLUG if get_settings().store_is_remote else None


def setup_server(
    *,
    gpu_classes: Iterable[str] = (),
    gpus: Mapping[str, int] | None = None,
    cpu_pool: bool = True,
    process_pools: Iterable[str] = (),
    image: str = DEFAULT_IMAGE,
    data_root_host: str = DEFAULT_DATA_ROOT_HOST,
    shm_size: str = DEFAULT_SHM_SIZE,
    networks: list[str] | None = None,
    network_mode: str | None = None,
    ca_bundle: str | None = None,
    result_storage: bool = True,
    deploy_to: DeployTo | None = None,
    code_dir: str | None = None,
    cpu_only: bool = False,
) -> dict[str, Any]:
    """Everything a server needs before `prefect deploy --all`; returns what it made.

    deploy_to: where prefect.yaml's deployments go; default "process" when a process pool is
    given, else "docker". The Docker `cpu` pool is made for Docker setups only.
    """
    from prefect import get_client

    gpu_classes, process_pools = list(gpu_classes), list(process_pools)
    deploy_to = deploy_to or ("process" if process_pools else "docker")
    targets = deploy_targets(deploy_to, gpu_classes=gpu_classes, process_pools=process_pools,
                             code_dir=code_dir, cpu_pool=cpu_pool, cpu_only=cpu_only)
    docker = bool(gpu_classes) or deploy_to == "docker"
    pools = (pool_definitions(
        gpu_classes, gpus=gpus, cpu=cpu_pool, image=image, data_root_host=data_root_host,
        shm_size=shm_size, networks=networks, network_mode=network_mode, ca_bundle=ca_bundle,
    ) if docker else []) + [process_pool(name) for name in process_pools]
    with get_client(sync_client=True) as client:
        made = {"pools": ensure_pools(client, pools), "limits": ensure_limits(client, gpu_limits(pools))}
    made["variables"] = ensure_variables(targets)
    made["result_storage"] = ensure_result_storage() if result_storage else None
    return made


def parse_counts(text: str) -> dict[str, int]:
    """'a100=8,l4=2' -> {'a100': 8, 'l4': 2}"""
    out: dict[str, int] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, n = item.partition("=")
        if not n.isdigit():
            raise argparse.ArgumentTypeError(f"write GPU counts as class=N, e.g. a100=8 (got {item!r})")
        out[name] = int(n)
    return out


def split_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pools.setup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    full = sub.add_parser("all", help="pools, GPU limits and the result-storage block")
    full.add_argument("--gpu-classes", type=split_list, default=[],
                      help="comma-separated GPU classes, one Docker pool each (a100,l4)")
    full.add_argument("--gpus", type=parse_counts, default={},
                      help="GPUs per class in the fleet: slots of gpu-<class> (a100=8,l4=2)")
    full.add_argument("--no-cpu-pool", action="store_true", help="skip the Docker pool 'cpu'")
    full.add_argument("--process-pool", action="append", default=[],
                      help="create a process pool of this name (no Docker); by default "
                           "every deployment goes to it")
    full.add_argument("--deploy-to", choices=["docker", "process"], default=None,
                      help="where prefect.yaml's deployments go (default: process when "
                           "--process-pool is given, else docker)")
    full.add_argument("--code-dir", default=None,
                      help="folder a run starts in (default: /opt/talkflow for docker, "
                           "this checkout for process)")
    full.add_argument("--image", default=os.environ.get("TALKFLOW_IMAGE", DEFAULT_IMAGE))
    full.add_argument("--data-root-host", default=os.environ.get("TALKFLOW_DATA_HOST",
                                                                 DEFAULT_DATA_ROOT_HOST),
                      help="host folder mounted as each run's data root (/data)")
    full.add_argument("--shm-size", default=DEFAULT_SHM_SIZE)
    full.add_argument("--network", action="append", default=[],
                      help="Docker network the runs join (the compose stack's network)")
    full.add_argument("--network-mode", default=None,
                      help="Docker network mode of the runs, e.g. host (no bridge traffic)")
    full.add_argument("--ca-bundle", default=os.environ.get("TALKFLOW_CA_BUNDLE_HOST"),
                      help="CA bundle on the Docker hosts, mounted read-only into each run and "
                           "trusted there (for a network that re-signs TLS)")
    full.add_argument("--cpu-only", action="store_true",
                      help="Docker without GPU pools: every deployment goes to the Docker cpu pool")
    full.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                      help="wait this long for the server to answer before giving up (one line)")
    storage = sub.add_parser("result-storage", help="only the result-storage block")
    storage.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                         help="wait this long for the server to answer")
    sub.add_parser("env", help="print export lines for the Prefect result settings")
    wait = sub.add_parser("wait", help="wait for PREFECT_API_URL/health")
    wait.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)

    if args.command == "env":
        for k, v in run_env().items():
            print(f"export {k}={shlex.quote(v)}")
        return 0
    if args.command == "wait":
        waited = wait_for_api(timeout_s=args.timeout)
        print(f"Prefect API {api_url()} is up ({waited:.1f} s)", file=sys.stderr)
        return 0
    api_url()
    if args.command == "result-storage":
        wait_for_api(timeout_s=args.wait)  # one line when the server is not there
        print(json.dumps({"result_storage": ensure_result_storage()}))
        return 0
    if args.command in (None, "all"):
        args = args if args.command else full.parse_args([])
        try:
            deploy_targets(args.deploy_to or ("process" if args.process_pool else "docker"),
                           gpu_classes=args.gpu_classes, process_pools=args.process_pool,
                           cpu_pool=not args.no_cpu_pool, cpu_only=args.cpu_only)
        except ValueError as exc:
            parser.error(str(exc))
        wait_for_api(timeout_s=args.wait)  # one line when the server is not there
        made = setup_server(
            gpu_classes=args.gpu_classes, gpus=args.gpus, cpu_pool=not args.no_cpu_pool,
            process_pools=args.process_pool, image=args.image, data_root_host=args.data_root_host,
            shm_size=args.shm_size, networks=args.network or None, network_mode=args.network_mode,
            ca_bundle=args.ca_bundle, deploy_to=args.deploy_to, code_dir=args.code_dir,
            cpu_only=args.cpu_only,
        )
        print(json.dumps(made))
        return 0
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
