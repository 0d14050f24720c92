"""Settings from the environment (prefix TALKFLOW_), typed with pydantic-settings."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TALKFLOW_", extra="ignore")

    data_root: Path = Field(
        default=Path(".talkflow"),
        description="Local working folder: embedded Prefect home, locks, local store, outputs.",
    )
    store_url: str | None = Field(
        default=None,
        description="Artifact store: a local path, or s3://bucket/prefix (endpoint and "
        "credentials from the standard AWS_* variables). Default: <data_root>/store.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Torch device.")
    redis_url: str | None = Field(
        default=None,
        description="redis://host:port/db for cache locks across hosts; file locks when unset.",
    )
    lock_lease_s: float = Field(
        default=30.0, gt=0,
        description="Redis locks: a holder renews its lock every third of this; a killed holder's "
        "lock expires after it.",
    )
    lock_timeout_s: float = Field(
        default=6 * 3600.0, description="Longest wait for another run computing the same stage."
    )
    embedded_server: Literal["background", "ephemeral"] = Field(
        default="background",
        description="Embedded mode (no PREFECT_API_URL): 'background' starts one Prefect server per data root "
        "on first use, on 127.0.0.1, and later commands reuse it (`talkflow server status|stop`); "
        "'ephemeral' starts and stops a temporary server in every process (Prefect's default; 8-17 s each).",
    )
    warm_commands: bool = Field(
        default=True,
        description="With the background server: a command that runs a flow forks from a warm process that has "
        "imported the flows and torch (talkflow.warm), instead of importing them again (3-6 s).",
    )
    server_idle_s: float = Field(
        default=1800.0, gt=0,
        description="The background server stops itself after this many seconds with no talkflow process using it.",
    )
    server_start_timeout_s: float = Field(
        default=180.0, gt=0,
        description="Longest wait for the background server to answer /api/health when it starts.",
    )

    @property
    def root(self) -> Path:
        return self.data_root.expanduser().resolve()

    @property
    def store(self) -> str:
        """The store URL with the local default filled in."""
        if self.store_url:
            if "://" in self.store_url:
                return self.store_url.rstrip("/")
            return str(Path(self.store_url).expanduser().resolve())
        return str(self.root / "store")

    @property
    def store_is_remote(self) -> bool:
        return "://" in self.store and not self.store.startswith("file://")

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    @property
    def work_dir(self) -> Path:
        """Scratch space for stages; results move into the store when complete."""
        return self.root / "work"

    @property
    def outputs_dir(self) -> Path:
        return self.root / "outputs"

    def torch_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings; tests call `get_settings.cache_clear()` after changing the env."""
    return Settings()
