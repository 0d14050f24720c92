"""Prefect tasks: each a cached stage over the artifact store (see talkflow.cache.stage)."""
