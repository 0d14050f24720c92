"""talkflow: talking-head videos (ER-NeRF, NeRFFaceSpeech) as cached Prefect flows."""

from talkflow.runtime import configure_prefect_env

__version__ = "0.1.0"

configure_prefect_env()
