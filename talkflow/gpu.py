"""One training per GPU: a slot of Prefect's global concurrency limit `gpu-<class>`.

A GPU task wraps its work in `gpu_slot()`:

    with gpu_slot():
        train_head(...)

The limit `gpu-<class>` has as many slots as the fleet has GPUs of that class
(pools/setup.py creates it), so runs queue for a free GPU instead of sharing one.
The class comes from TALKFLOW_GPU_CLASS, which each GPU pool's job template sets. Without a class
(CPU pools) or embedded (the background or a temporary server) the slot is a no-op: one machine,
one process, nothing to share.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

ENV_GPU_CLASS = "TALKFLOW_GPU_CLASS"


def limit_name(gpu_class: str) -> str:
    return f"gpu-{gpu_class}"


def current_gpu_class() -> str | None:
    return os.environ.get(ENV_GPU_CLASS) or None


@contextmanager
def gpu_slot(gpu_class: str | None = None, *, timeout_s: float | None = None) -> Iterator[None]:
    """Hold one slot of `gpu-<class>` while the block runs; waits for a free GPU first.

    A class with no limit on the server is a configuration error (strict): running unguarded
    would put two trainings on one GPU.
    """
    from prefect.concurrency.sync import concurrency
    from prefect.settings import PREFECT_API_URL

    from talkflow.runtime import BACKGROUND_API_ENV

    gpu_class = gpu_class or current_gpu_class()
    url = PREFECT_API_URL.value()
    if not gpu_class or not url or url == os.environ.get(BACKGROUND_API_ENV):  # no class, or embedded
        yield
        return

    with concurrency(limit_name(gpu_class), occupy=1, timeout_seconds=timeout_s, strict=True):
        yield
