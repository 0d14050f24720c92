"""The Docker worker talkflow runs: prefect-docker's, with one clear error for a GPU run on a
host that cannot give it a GPU.

    python -m pools.docker_worker worker start --pool gpu-l4 --type docker ...

is `prefect worker start ...` with this class as the `docker` worker type (docker/entrypoint.sh
starts Docker workers this way). A GPU pool's run asks Docker for NVIDIA devices; an engine
without the NVIDIA Container Toolkit creates the container and then refuses to start it
("could not select device driver ..."). prefect-docker would leave the created container behind,
log a traceback and crash the run with the raw API error. Here the container is removed and the
run ends Crashed with one line that says what is wrong and what to do, in its state and its log.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import docker.errors
from prefect.states import Crashed
from prefect.utilities.engine import propose_state
from prefect_docker.worker import DockerWorker, DockerWorkerJobConfiguration, DockerWorkerResult

NO_GPU_DRIVER = "could not select device driver"  # Docker's refusal of a device request
RUN_LABEL = "io.prefect.flow-run-id"  # prefect-docker's label on each run's container


class NoGpuOnHost(RuntimeError):
    """Docker cannot give the run's container the NVIDIA GPUs its pool asks for."""


def no_gpu_message(pool: str, image: str) -> str:
    return (f"no NVIDIA GPU for this run: the Docker host of pool {pool!r} has no NVIDIA Container "
            f"Toolkit (Docker: {NO_GPU_DRIVER} \"nvidia\"); install the toolkit and an NVIDIA driver "
            f">= 580 there, or send the run to a CPU pool (image {image})")


def wants_gpu(configuration: DockerWorkerJobConfiguration) -> bool:
    requests = (configuration.container_create_kwargs or {}).get("device_requests") or []
    return any(r.get("driver") == "nvidia" or ["gpu"] in (r.get("capabilities") or []) for r in requests)


with warnings.catch_warnings():
    # registered under prefect-docker's own key, "docker" (Prefect warns that it replaces it)
    warnings.simplefilter("ignore")

    class TalkflowDockerWorker(DockerWorker):
        type = "docker"

        def _create_and_start_container(self, configuration: DockerWorkerJobConfiguration):
            try:
                return super()._create_and_start_container(configuration)
            except docker.errors.APIError as exc:
                if NO_GPU_DRIVER not in str(exc) or not wants_gpu(configuration):
                    raise
                self._remove_unstarted(configuration)
                raise NoGpuOnHost(no_gpu_message(self._work_pool_name, configuration.image)) from None

        def _remove_unstarted(self, configuration: DockerWorkerJobConfiguration) -> None:
            """The run's container that Docker created but would not start."""
            run_id = (configuration.labels or {}).get(RUN_LABEL)
            if not run_id:
                return
            client = self._get_client()
            try:
                for c in client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}",
                                                                   "status": "created"}):
                    c.remove(force=True)
            finally:
                client.close()

        async def run(self, flow_run: Any, configuration: DockerWorkerJobConfiguration,
                      task_status: Any = None) -> DockerWorkerResult:
            try:
                return await super().run(flow_run, configuration, task_status)
            except NoGpuOnHost as exc:
                line = str(exc)
                self.get_flow_run_logger(flow_run).error(line)
                self._logger.error(f"flow run {flow_run.name!r}: {line}")
                await propose_state(self.client, Crashed(message=line), flow_run_id=flow_run.id)
                if task_status is not None:
                    task_status.started(exc)  # submitted and settled: the base worker adds nothing
                return DockerWorkerResult(status_code=0, identifier="")


def main(argv: list[str] | None = None) -> None:
    """`prefect ARGV...` (the CLI reads sys.argv), with TalkflowDockerWorker registered above."""
    from prefect.cli import app

    if argv is not None:
        sys.argv = ["prefect", *argv]
    app()


if __name__ == "__main__":
    main()
