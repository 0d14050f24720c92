"""Scheduled retraining: avatars whose source footage (or dataset) changed since their last
training are preprocessed again and retrained; the others are left alone."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.preprocess import PreprocessConfig, preprocess_video
from flows.train import train_avatar
from talkflow.hashing import sha256_file
from tasks.registry import known_avatars, read_avatar, registered_dataset, registered_source
from tasks.train_config import TrainAvatarConfig


def retrain_reason(person: str) -> str | None:
    """Why `person` needs retraining, or None when the avatar is up to date."""
    source = registered_source(person)
    if source is not None:
        video = Path(source.video)
        if not video.exists():
            return None  # footage gone: keep the avatar as it is (logged by the flow)
        if sha256_file(video) != source.sha256:
            return "source footage changed"
    dataset = registered_dataset(person)
    if dataset is not None and dataset != read_avatar(person).dataset:
        return "dataset re-made since the last training"
    return None


@flow(name="retrain")
def retrain(config: TrainAvatarConfig = TrainAvatarConfig(), dry_run: bool = False) -> dict[str, str]:
    """Check every trained avatar; re-preprocess and retrain those whose inputs changed.

    Args:
        config: the training settings for the avatars retrained.
        dry_run: only report what would be retrained.
    Returns a {person: what happened} report; the run shows it as a table (what was checked and
    what was decided, per avatar) and one log line per avatar.
    """
    log = get_run_logger()
    report, rows = {}, []
    for person in known_avatars():
        reason = retrain_reason(person)
        report[person] = "up to date" if reason is None else f"{'would retrain' if dry_run else 'retrained'}: {reason}"
        rows.append({"avatar": person, "checked": what_was_checked(person), "decision": report[person]})
        log.info("%s: %s", person, report[person])
        if reason is None or dry_run:
            continue
        source = registered_source(person)
        if reason == "source footage changed":
            preprocess_video(Path(source.video), person, PreprocessConfig.model_validate(source.config))
        train_avatar(person, config)
    create_table_artifact(rows or [{"avatar": "(none)", "checked": "no trained avatars", "decision": "nothing to do"}],
                          key="retrain-report",
                          description=f"Retrain check of {len(rows)} avatar(s){' (dry run)' if dry_run else ''}: "
                          "what was compared, and what was done.")
    if not rows:
        log.info("no trained avatars: nothing to check")
    return report


def what_was_checked(person: str) -> str:
    """The inputs retrain compared for `person`, in words."""
    source = registered_source(person)
    if source is None:
        return "registered dataset vs the one trained on (no footage recorded)"
    state = "sha256" if Path(source.video).exists() else "missing, kept as is"
    return f"footage {source.video} ({state}); registered dataset vs the one trained on"
