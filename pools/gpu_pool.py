"""Docker work pools: one per GPU class (gpu-a100, gpu-l4, ...) and one for CPU-only stages.

The base job template is prefect-docker's own, with what talkflow's runs need added:

* GPUs and shared memory go through `container_create_kwargs` (docker-py's create arguments:
  `device_requests` for NVIDIA GPUs, `shm_size` for PyTorch data loaders); the pool's form shows
  them as two job variables, `gpu_count` and `shm_size`, so a deployment can change them
  without restating the rest.
* The data root is a bind mount (`volumes`), TALKFLOW_DATA_ROOT points at it.
* Store, lock and AWS settings are passed by NAME: the template holds `{{ $NAME }}`, which the
  worker fills in from its own environment when it starts each container. No value, secret or
  not, is ever stored on the Prefect server. A name the worker does not have renders as "", and
  docker/entrypoint.sh drops empty TALKFLOW_*/AWS_* variables before anything reads them.

`python -m pools.gpu_pool` prints the GPU template (the file docker-gpu-template.json is
that output; a test keeps the two equal). Pools are created on a server by pools/setup.py.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_IMAGE = "talkflow-worker:latest"
DEFAULT_DATA_ROOT_HOST = "/srv/talkflow"
DATA_ROOT_IN_CONTAINER = "/data"
DEFAULT_SHM_SIZE = "16g"
CA_BUNDLE_IN_CONTAINER = "/etc/talkflow/ca-bundle.crt"
CPU_POOL = "cpu"
TEMPLATE_JSON = Path(__file__).with_name("docker-gpu-template.json")

# Settings every run needs, passed from the worker's environment by name (never by value).
PASSED_ENV: tuple[str, ...] = (
    "TALKFLOW_STORE_URL",
    "TALKFLOW_REDIS_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
)
GPU_CLASS_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")


def gpu_pool_name(gpu_class: str) -> str:
    return f"gpu-{check_gpu_class(gpu_class)}"


def gpu_limit_name(gpu_class: str) -> str:
    """The global concurrency limit whose slots are the GPUs of one class (talkflow.gpu)."""
    return f"gpu-{check_gpu_class(gpu_class)}"


def check_gpu_class(gpu_class: str) -> str:
    if not isinstance(gpu_class, str) or not GPU_CLASS_RE.match(gpu_class):
        raise ValueError(
            f"invalid GPU class {gpu_class!r}: use lower-case letters, digits and '-', "
            "e.g. 'a100', 'l4', 'h100-80g'"
        )
    return gpu_class


def passed_env(names: Iterable[str] = PASSED_ENV) -> dict[str, str]:
    """{NAME: "{{ $NAME }}"}: the worker fills each in from its own environment."""
    return {name: "{{ $" + name + " }}" for name in names}


def docker_job_template(
    *,
    gpu: bool = True,
    gpu_class: str | None = None,
    image: str = DEFAULT_IMAGE,
    data_root_host: str = DEFAULT_DATA_ROOT_HOST,
    shm_size: str = DEFAULT_SHM_SIZE,
    gpu_count: int = -1,
    networks: list[str] | None = None,
    network_mode: str | None = None,
    ca_bundle: str | None = None,
) -> dict[str, Any]:
    """A Docker work pool base job template for talkflow runs.

    gpu_class: baked into the runs' TALKFLOW_GPU_CLASS (which `talkflow.gpu.gpu_slot` uses);
    None takes it from the worker's environment. gpu_count: -1 gives a run every GPU of its host.
    network_mode: e.g. "host" (runs share the host's network: no bridge traffic).
    ca_bundle: a CA bundle on the host, mounted read-only into each run and trusted there
    (TALKFLOW_CA_BUNDLE, see docker/with-ca.sh); never copied into the image or the server.
    """
    from prefect_docker.worker import DockerWorker

    template = copy.deepcopy(DockerWorker.get_default_base_job_template())
    job, props = template["job_configuration"], template["variables"]["properties"]

    create_kwargs: dict[str, Any] = {"shm_size": "{{ shm_size }}"}
    if gpu:
        create_kwargs["device_requests"] = [
            # gpu_ids (unset by default, so the key is dropped) pins a run to given GPUs; the
            # API sends gpu_count=0 with it (Docker refuses a count together with device ids)
            {"driver": "nvidia", "count": "{{ gpu_count }}", "device_ids": "{{ gpu_ids }}",
             "capabilities": [["gpu"]]}
        ]
    job["container_create_kwargs"] = create_kwargs
    # Replaced by the two variables below: a deployment that set the raw dict would silently
    # drop the GPU request.
    props.pop("container_create_kwargs", None)
    props["shm_size"] = {
        "title": "Shared memory",
        "type": "string",
        "default": shm_size,
        "description": "/dev/shm of each run's container (PyTorch data loaders need it), "
        "e.g. 2g, 16g.",
    }
    if gpu:
        props["gpu_count"] = {
            "title": "GPUs",
            "type": "integer",
            "default": gpu_count,
            "minimum": -1,
            "description": "NVIDIA GPUs given to each run's container; -1 = all GPUs of the host.",
        }
        props["gpu_ids"] = {
            "title": "GPU indices",
            "type": "array",
            "items": {"type": "string"},
            "description": "Pin each run to these GPUs of the host (e.g. [\"1\"]), with GPUs set to 0; "
            "empty: as many as GPUs says.",
        }

    env = {
        "TALKFLOW_DATA_ROOT": DATA_ROOT_IN_CONTAINER,
        "TALKFLOW_DEVICE": "cuda" if gpu else "cpu",
        # run_deployment callers read a run's return value: persist it (in the result store).
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        **passed_env(),
    }
    if gpu:
        env["TALKFLOW_GPU_CLASS"] = (
            check_gpu_class(gpu_class) if gpu_class else "{{ $TALKFLOW_GPU_CLASS }}"
        )
    props["env"]["default"] = env
    props["env"]["description"] = (
        "Environment of each run. Values written {{ $NAME }} are taken from the worker's own "
        "environment when the run starts; put no secret values here."
    )
    volumes = [f"{data_root_host}:{DATA_ROOT_IN_CONTAINER}"]
    if ca_bundle:
        volumes.append(f"{ca_bundle}:{CA_BUNDLE_IN_CONTAINER}:ro")
        env["TALKFLOW_CA_BUNDLE"] = CA_BUNDLE_IN_CONTAINER
    props["image"]["default"] = image
    # a local or pinned tag: pull only when absent (prefect-docker pulls `:latest` on every run)
    props["image_pull_policy"]["default"] = "IfNotPresent"
    props["volumes"]["default"] = volumes
    props["auto_remove"]["default"] = True
    if networks and network_mode:
        raise ValueError("give Docker networks or a network mode, not both")
    if networks:
        props["networks"]["default"] = list(networks)
    if network_mode:
        props["network_mode"]["default"] = network_mode
    template["variables"]["description"] = (
        "talkflow runs in Docker" + (" on NVIDIA GPUs" if gpu else " (CPU only)")
    )
    return template


@dataclass(frozen=True)
class PoolDefinition:
    name: str
    base_job_template: dict[str, Any]
    type: str = "docker"
    description: str = ""
    concurrency_limit: int | None = None
    gpu_class: str | None = None
    gpus: int = 0  # slots of the global limit gpu-<class>


def pool_definitions(
    gpu_classes: Iterable[str],
    *,
    gpus: Mapping[str, int] | None = None,
    cpu: bool = True,
    image: str = DEFAULT_IMAGE,
    data_root_host: str = DEFAULT_DATA_ROOT_HOST,
    shm_size: str = DEFAULT_SHM_SIZE,
    networks: list[str] | None = None,
    network_mode: str | None = None,
    ca_bundle: str | None = None,
) -> list[PoolDefinition]:
    """One Docker pool per GPU class (["a100", "l4"] -> gpu-a100, gpu-l4), plus `cpu`.

    gpus: how many GPUs of each class the fleet has (default 1): the size of the class's
    global concurrency limit, so at most that many trainings run at once.
    """
    gpus = dict(gpus or {})
    classes = [check_gpu_class(c) for c in dict.fromkeys(gpu_classes)]
    unknown = set(gpus) - set(classes)
    if unknown:
        raise ValueError(f"GPU counts given for classes without a pool: {sorted(unknown)}")
    pools = [
        PoolDefinition(
            name=gpu_pool_name(c),
            base_job_template=docker_job_template(
                gpu=True, gpu_class=c, image=image, data_root_host=data_root_host,
                shm_size=shm_size, networks=networks, network_mode=network_mode, ca_bundle=ca_bundle,
            ),
            description=f"talkflow GPU runs on {c.upper()} hosts (Docker, NVIDIA runtime)",
            gpu_class=c,
            gpus=int(gpus.get(c, 1)),
        )
        for c in classes
    ]
    if cpu:
        pools.append(
            PoolDefinition(
                name=CPU_POOL,
                base_job_template=docker_job_template(
                    gpu=False, image=image, data_root_host=data_root_host,
                    shm_size="2g", networks=networks, network_mode=network_mode, ca_bundle=ca_bundle,
                ),
                description="talkflow CPU stages (media, TTS, sample clips) in Docker",
            )
        )
    return pools


def gpu_limits(pools: Iterable[PoolDefinition]) -> dict[str, int]:
    """Global concurrency limits (name -> slots): one per GPU class."""
    return {gpu_limit_name(p.gpu_class): p.gpus for p in pools if p.gpu_class}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--write"]:
        TEMPLATE_JSON.write_text(json.dumps(docker_job_template(), indent=2) + "\n")
        print(f"wrote {TEMPLATE_JSON}")
    else:
        print(json.dumps(docker_job_template(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
