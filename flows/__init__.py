"""Prefect flows: the DAGs a user triggers. They compose tasks and hold no maths."""
