"""How Prefect runs: embedded (a local server on SQLite) or against PREFECT_API_URL.

`configure_prefect_env` sets Prefect's environment for talkflow; importing flows/ calls it, and so
does `ensure_result_storage` before the CLI or the API runs a flow. Importing talkflow, models/ or
tasks/ has no side effect. Stage results (manifests) go to <store>/cache: a local folder through
PREFECT_RESULTS_LOCAL_STORAGE_PATH, or on S3 through a saved RemoteFileSystem block.

Embedded, the CLI and the API report to the data root's background server (talkflow.server),
started by the first command and reused by later ones: `start_background_server` (at once, so it
boots while the command imports the flows), then `use_background_server` before a flow runs.
PREFECT_API_URL set by the user, or an API Prefect already has (a test harness), wins;
TALKFLOW_EMBEDDED_SERVER=ephemeral keeps Prefect's temporary server per process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from talkflow.settings import Settings, get_settings

if TYPE_CHECKING:
    from talkflow.server import ServerState

RESULT_BLOCK = "talkflow-store"
RESULT_BLOCK_SLUG = f"remote-file-system/{RESULT_BLOCK}"
# PREFECT_API_URL as talkflow set it for the background server (so: not the user's, still embedded)
BACKGROUND_API_ENV = "TALKFLOW_BACKGROUND_API_URL"


def embedded(env: dict[str, str] | os._Environ = os.environ) -> bool:
    """No Prefect API chosen by the user: the background server, or a temporary one."""
    url = env.get("PREFECT_API_URL")
    return not url or url == env.get(BACKGROUND_API_ENV)


def _wants_background_server() -> bool:
    if not embedded() or get_settings().embedded_server != "background":
        return False
    if "prefect.settings" in sys.modules:  # an API Prefect already has (prefect_test_harness, a profile)
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value()
        if url and url != os.environ.get(BACKGROUND_API_ENV):
            return False
    return True


def _point_prefect_at(url: str) -> None:
    os.environ["PREFECT_API_URL"] = url
    os.environ[BACKGROUND_API_ENV] = url
    if "prefect.context" in sys.modules:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()


_pending: ServerState | None = None  # started or found by this process, not yet seen answering


def start_background_server() -> None:
    """Find or start the data root's background server without waiting for it (a no-op unless
    embedded with the background server): a command calls this once its input is checked, so the
    server starts while the command imports the flows."""
    global _pending
    if _pending is None and _wants_background_server():
        from talkflow import server

        _pending = server.begin()
        _point_prefect_at(_pending.url)


def use_background_server() -> ServerState | None:
    """Point this process's Prefect at the data root's background server, once it answers (started
    if need be; replaced if it was stopped meanwhile). None when the background server is not used."""
    global _pending
    if not _wants_background_server():
        return None
    from talkflow import server

    state = _pending
    if state is None or not server.healthy(state.url, timeout_s=1.0):
        state = server.wait_ready(state if state is not None and server.running(state.pid) else server.begin())
    _pending = state
    if os.environ.get("PREFECT_API_URL") != state.url:
        _point_prefect_at(state.url)
    configure_prefect_env()
    return state


@contextmanager
def background_run_settings() -> Iterator[None]:
    """Prefect's settings for flows this process runs on the background server: no flow-run
    heartbeats. They feed a server's crash detection (its triggers service, which the background
    server leaves off), and the end of every flow run waits up to 1 s for its heartbeat thread to
    wake (3 s of a cached demo's 7 flow runs). Elsewhere (PREFECT_API_URL, a test harness) the
    settings are left as they are."""
    if not _wants_background_server():
        yield
        return
    from prefect.context import SettingsContext, get_settings_context

    ctx = get_settings_context()
    flows = ctx.settings.flows.model_copy(update={"heartbeat_frequency": None})
    with SettingsContext(profile=ctx.profile, settings=ctx.settings.model_copy(update={"flows": flows})):
        yield


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
    use_background_server()
    configure_prefect_env()
    s = get_settings()
    if not s.store_is_remote:
        return
    from prefect.filesystems import RemoteFileSystem

    from talkflow.store import S3_OPTIONS

    basepath = f"{s.store}/cache"
    settings = S3_OPTIONS if basepath.startswith(("s3://", "s3a://")) else {}  # the store's retries
    try:
        saved = RemoteFileSystem.load(RESULT_BLOCK)
        if saved.basepath == basepath and saved.settings == settings:
            return
    except ValueError:
        pass  # not saved yet
    RemoteFileSystem(basepath=basepath, settings=settings).save(RESULT_BLOCK, overwrite=True)
