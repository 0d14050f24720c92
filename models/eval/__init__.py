"""Evaluation metrics (pure numpy interfaces)."""
