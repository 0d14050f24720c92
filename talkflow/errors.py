"""Typed errors a user can act on. Each message says what was wrong and what to do."""


class TalkflowError(Exception):
    """Base of every error talkflow raises on purpose (bad input, missing asset, bad config)."""


class InputError(TalkflowError):
    """The user's input cannot be used; raised before any expensive work."""


class MediaError(InputError):
    """A media file is unusable."""


class MediaUnreadable(MediaError):
    """The file does not exist or cannot be read."""


class NotAMedia(MediaError):
    """ffprobe cannot parse the file as audio or video."""


class NoVideoStream(MediaError):
    """The file has no video stream where one is required."""


class NoAudioStream(MediaError):
    """The file has no audio stream where one is required."""


class EmptyMedia(MediaError):
    """The file has zero duration or no frames."""


class MediaTooShort(MediaError):
    """The file is shorter than the configured minimum."""


class AudioEndsEarly(MediaError):
    """A talking video's sound track ends well before its picture."""


class ImageTooSmall(InputError):
    """An image has fewer pixels than the step that reads it needs."""


class SpeechError(InputError):
    """Text-to-speech input is unusable (e.g. empty text)."""


class FaceNotFound(InputError):
    """No usable face was found in an image or video."""


class AssetMissing(TalkflowError):
    """A pretrained weight file the user must supply is not registered or not on disk."""


class StoreError(TalkflowError):
    """The artifact store is misconfigured or an entry failed verification."""


class DiskFull(StoreError):
    """The disk under the data root or a local store filled up; nothing half-written was kept."""


class CorruptArtifact(StoreError):
    """A stored artifact does not match its recorded checksum or size."""


class FaceTooSmall(FaceNotFound):
    """A face was found but is too small (in pixels) to track or parse reliably."""
