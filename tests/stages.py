"""Small real stages for cache tests: they read input files and write artifacts."""

from __future__ import annotations

import time
from pathlib import Path

from talkflow.runtime import configure_prefect_env

configure_prefect_env()  # a module of flows, like flows/: Prefect's environment before prefect is imported

from prefect import flow  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from talkflow.cache import stage  # noqa: E402
from talkflow.store import StageResult, get_store  # noqa: E402
from tasks.inputs import local_file, scratch  # noqa: E402


class ReverseConfig(BaseModel):
    repeat: int = 1
    delay_s: float = 0.0  # widens the window in which concurrent requests overlap


@stage("reverse", "1")
def reverse_bytes(src: Path, config: ReverseConfig, namespace: str | None = None) -> StageResult:
    data = local_file(src).read_bytes()
    time.sleep(config.delay_s)
    with scratch("reverse") as work:
        (work / "out.bin").write_bytes(data[::-1] * config.repeat)
        (work / "tree").mkdir()
        for i in range(3):
            (work / "tree" / f"{i}.txt").write_bytes(data[i::3])
        store = get_store()
        return StageResult(
            artifacts={
                "out": store.put_file(work / "out.bin"),
                "tree": store.put_dir(work / "tree"),
            },
            meta={"n": len(data)},
        )


@stage("length", "1")
def length_of(upstream: StageResult) -> StageResult:
    data = get_store().fetch(upstream["out"]).read_bytes()
    return StageResult(meta={"length": len(data)})


@flow
def reverse_flow(src: Path, config: ReverseConfig = ReverseConfig(), namespace: str | None = None):

    rev = reverse_bytes(src, config, namespace=namespace)
    return rev, length_of(rev)


@flow
def reverse_twice_concurrently(src: Path, config: ReverseConfig):
    """Two identical requests at once, in two threads of one process."""
    futures = [reverse_bytes.submit(src, config) for _ in range(2)]
    return [f.result() for f in futures]


@flow
def reverse_then_again(src: Path, config: ReverseConfig = ReverseConfig(), namespace: str | None = None):
    """The same stage twice in one flow run: the first computes, the second is a cache hit."""
    first = reverse_bytes(src, config, namespace=namespace)
    second = reverse_bytes(src, config, namespace=namespace)
    return first, second
