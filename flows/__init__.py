"""The DAGs a user triggers; importing them sets Prefect's environment for talkflow, and makes a
failed run's logs say its cause once (talkflow.runlog)."""

from talkflow import runlog
from talkflow.runtime import configure_prefect_env

configure_prefect_env()
runlog.install()
