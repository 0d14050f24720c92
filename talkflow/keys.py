"""Cache keys, without Prefect: what the stage cache (talkflow.cache) computes and what the cache
commands (talkflow.cache_admin) read back.

key = <namespace>.<stage>.v<version>.<sha256 of the inputs' CONTENT and the config>

* a Path argument contributes the sha256 of the file (or directory) it points to, so renaming
  or moving the input still hits and changing one byte misses;
* an Artifact / StageResult contributes its recorded checksums (upstream changes flow down);
* a pydantic config contributes its canonical JSON; other values their JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from talkflow.checks import validate_name
from talkflow.hashing import canonical_json, sha256_bytes, sha256_path
from talkflow.store import Artifact, StageResult

NO_NAMESPACE = "_"


def fingerprint(value: Any) -> Any:
    """What of an argument enters the cache key: content for files, checksums for artifacts."""
    if isinstance(value, StageResult):
        return {
            "stage": value.stage,
            "artifacts": {k: a.sha256 for k, a in sorted(value.artifacts.items())},
            "meta": sha256_bytes(canonical_json(value.meta).encode()),
        }
    if isinstance(value, Artifact):
        return {"artifact": value.sha256}
    if isinstance(value, Path):
        # a missing path hashes as itself; the stage body reports it as bad input
        return {"file": sha256_path(value)} if value.exists() else {"missing": str(value)}
    if isinstance(value, BaseModel):
        return {"config": canonical_json(value)}
    if isinstance(value, dict):
        return {str(k): fingerprint(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [fingerprint(v) for v in value]
    return value


def cache_key(stage: str, version: str, inputs: dict[str, Any]) -> str:
    namespace = inputs.get("namespace") or NO_NAMESPACE
    if namespace != NO_NAMESPACE:
        validate_name(namespace, "namespace")
    digest = sha256_bytes(canonical_json(fingerprint(inputs)).encode())
    return f"{namespace}.{stage}.v{version}.{digest}"


def parse_key(key: str) -> dict[str, str] | None:
    parts = key.split(".")
    if len(parts) != 4 or not parts[2].startswith("v"):
        return None
    return {"namespace": parts[0], "stage": parts[1], "version": parts[2][1:], "digest": parts[3]}


__all__ = ["NO_NAMESPACE", "cache_key", "fingerprint", "parse_key"]
