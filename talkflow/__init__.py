"""talkflow: talking-head videos (ER-NeRF, NeRFFaceSpeech) as cached Prefect flows.

Importing talkflow (or models/, tasks/) changes nothing: Prefect's environment is set by
`talkflow.runtime.configure_prefect_env`, which flows/ and the two faces (CLI, API) call.
"""

__version__ = "0.1.0"
