"""Model-side code (no orchestration imports)."""
