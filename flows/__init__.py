"""The DAGs a user triggers; importing them sets Prefect's environment for talkflow."""

from talkflow.runtime import configure_prefect_env

configure_prefect_env()
