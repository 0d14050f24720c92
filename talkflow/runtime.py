"""How Prefect runs: embedded (ephemeral server on SQLite) or against PREFECT_API_URL.

`configure_prefect_env` sets Prefect's environment for talkflow; importing flows/ calls it, and so
does `ensure_result_storage` before the CLI or the API runs a flow. Importing talkflow, models/ or
tasks/ has no side effect. Stage results (manifests) go to <store>/cache: a local folder through
PREFECT_RESULTS_LOCAL_STORAGE_PATH, or on S3 through a saved RemoteFileSystem block.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from talkflow.settings import Settings, get_settings

RESULT_BLOCK = "talkflow-store"
RESULT_BLOCK_SLUG = f"remote-file-system/{RESULT_BLOCK}"


def embedded(env: dict[str, str] | os._Environ = os.environ) -> bool:
    return not env.get("PREFECT_API_URL")


def configure_prefect_env(settings: Settings | None = None) -> None:
    """Set PREFECT_* for talkflow (an embedded home under the data root, result storage in the
    store). Idempotent; when prefect is already imported and something changed, Prefect's global
    settings are refreshed so that the change takes effect."""
    s = settings or get_settings()
    env = os.environ
    before = {k: v for k, v in env.items() if k.startswith("PREFECT_")}
    if embedded(env):
        env.setdefault("PREFECT_HOME", str(s.prefect_home))
        Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # Prefect makes one level only
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    env.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    env.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    if s.store_is_remote:
        env["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] = RESULT_BLOCK_SLUG
        env.pop("PREFECT_RESULTS_LOCAL_STORAGE_PATH", None)
    else:
        env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = f"{s.store}/cache"
        env.pop("PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK", None)
    after = {k: v for k, v in env.items() if k.startswith("PREFECT_")}
    if after != before and "prefect.context" in sys.modules:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()


def ensure_result_storage() -> None:
    """For an S3 store, save the RemoteFileSystem block the stages write their results to.

    Prefect resolves it when a flow run starts, so this runs BEFORE flows: the CLI calls it,
    and so must any program that runs flows itself (once per Prefect server is enough).

    Credentials are never put in the block: s3fs reads them (and AWS_ENDPOINT_URL) from the
    environment of whichever process runs the task.
    """
    configure_prefect_env()
    s = get_settings()
    if not s.store_is_remote:
        return
    from prefect.filesystems import RemoteFileSystem

    basepath = f"{s.store}/cache"
    try:
        if RemoteFileSystem.load(RESULT_BLOCK).basepath == basepath:
            return
    except ValueError:
        pass  # not saved yet
    RemoteFileSystem(basepath=basepath).save(RESULT_BLOCK, overwrite=True)
