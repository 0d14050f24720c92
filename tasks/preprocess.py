"""ER-NeRF preprocessing stages: landmarks, parsing, background, torso and gt images, blinks.
Each is a cached task over the frames/audio artifacts of the media stage (the audio features
are tasks.features, which rendering uses too)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from models.face.config import BackgroundConfig, BlinkConfig, LandmarkConfig, ParsingConfig, TorsoConfig, resolve_method
from talkflow import media
from talkflow.cache import stage
from talkflow.contract import VIDEO_FPS
from talkflow.errors import InputError
from talkflow.settings import get_settings
from talkflow.store import Artifact, StageResult, get_store
from tasks.inputs import frame_folder, load_landmarks, local_file, scratch

T = TypeVar("T")


class LabelFolder(Sequence):
    """The parsing's label maps (S,S) uint8 as a lazy sequence: each PNG decoded when read."""

    def __init__(self, parsing: StageResult):
        self.colours = media.FrameFolder(local_file(parsing["parsing"]), "png")

    def __len__(self) -> int:
        return len(self.colours)

    def __getitem__(self, i: int) -> np.ndarray:
        from models.face.parsing import rgb_to_labels

        return rgb_to_labels(self.colours[i])


def load_labels(parsing: StageResult) -> LabelFolder:
    return LabelFolder(parsing)


def load_image(art: Artifact) -> np.ndarray:
    with Image.open(local_file(art)) as img:
        return np.asarray(img.convert("RGB"))


# Image files are decoded ahead of and encoded behind the per-frame work on a few threads
# (Pillow releases the GIL while it codes), so they overlap the computation.
IO_THREADS = 2
IO_AHEAD = 8  # frames decoded in advance / encodings in flight
PNG_LEVEL = 1  # zlib level of written PNGs: same pixels, twice as fast to write as the default 6


def prefetched(pool: ThreadPoolExecutor, read: Callable[[int], T], n: int) -> Iterator[T]:
    """read(0), read(1), ... read(n-1), each started IO_AHEAD items early on ``pool``."""
    pending: deque[Future] = deque(pool.submit(read, i) for i in range(min(IO_AHEAD, n)))
    for i in range(n):
        item = pending.popleft().result()
        if i + IO_AHEAD < n:
            pending.append(pool.submit(read, i + IO_AHEAD))
        yield item


class ImageWriter:
    """Saves arrays as image files on a thread pool, at most IO_AHEAD in flight; ``close``
    waits for all and raises the first error."""

    def __init__(self, pool: ThreadPoolExecutor):
        self.pool, self.pending = pool, deque()

    def save(self, array: np.ndarray, path: Path, mode: str = "RGB") -> None:
        while len(self.pending) >= IO_AHEAD:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(_save_image, array, path, mode))

    def close(self) -> None:
        while self.pending:
            self.pending.popleft().result()


def _save_image(array: np.ndarray, path: Path, mode: str) -> None:
    img = Image.fromarray(np.ascontiguousarray(array), mode)
    if path.suffix == ".jpg":
        img.save(path, "JPEG", quality=95)  # media.write_frames' quality
    else:
        img.save(path, "PNG", compress_level=PNG_LEVEL)


@stage("landmarks", "1")
def detect_landmarks(frames: StageResult, config: LandmarkConfig, fps: float, mesh: Path | None = None,
                     detector: Path | None = None, namespace: str | None = None) -> StageResult:
    """68 landmarks per frame of a clip at `fps`, smoothed; frames without a face are reported and
    interpolated. MediaPipe's ``mesh`` (face_landmark.tflite) gives the lips when
    ``config.mouth == "mesh"``; with its ``detector`` (face_detection_short_range.tflite) the points
    where dlib finds no face."""
    from models.face.video_landmarks import track_video_landmarks

    if (config.mouth == "mesh" or config.mesh_fallback) and mesh is None:
        raise InputError("landmarks.mouth='mesh' and landmarks.mesh_fallback need the face mesh network; "
                         "pass assets.shipped('face_mesh')")
    if config.mesh_fallback and detector is None:
        raise InputError("landmarks.mesh_fallback needs the face detection network; pass "
                         "assets.shipped('face_detection')")
    found = track_video_landmarks(frame_folder(frames), config, fps=fps, mesh=mesh, detector=detector)
    with scratch("landmarks") as work:
        np.save(work / "lms.npy", found.lms.astype(np.float32))
        art = get_store().put_file(work / "lms.npy")
    missing = [int(i) for i in np.flatnonzero(~found.detected)]
    return StageResult(
        artifacts={"lms": art},
        meta={"n_frames": len(found.lms), "missing_frames": missing, "warnings": found.warnings},
    )


@stage("parsing", "2")
def parse_faces(
    frames: StageResult,
    landmarks: StageResult,
    config: ParsingConfig,
    weights: Path | None = None,
    segmentation: Path | None = None,
    namespace: str | None = None,
) -> StageResult:
    """Head / neck / torso / background label images (BiSeNet when weights are given; else the
    classical parser, its person foreground from ``segmentation``, MediaPipe's
    selfie_segmentation.tflite, when ``config.person_mask == "segmentation"``)."""
    from models.face.parsing import labels_to_rgb, parse_frames

    method = resolve_method(config.method, weights)
    use_seg = method == "classical" and config.person_mask == "segmentation"
    if use_seg and segmentation is None:
        raise InputError("parsing.person_mask is 'segmentation' but no segmentation network was given; "
                         "pass assets.shipped('selfie_segmentation')")
    labels = parse_frames(frame_folder(frames), load_landmarks(landmarks), config=config,
                          weights=weights, device=get_settings().torch_device(),
                          segmentation=segmentation if use_seg else None)
    with scratch("parsing") as work, ThreadPoolExecutor(IO_THREADS) as pool:
        (work / "parsing").mkdir()
        writer = ImageWriter(pool)
        for i, lab in enumerate(labels):
            writer.save(labels_to_rgb(lab), work / "parsing" / f"{i}.png")
        writer.close()
        art = get_store().put_dir(work / "parsing")
    areas = np.bincount(labels.reshape(-1), minlength=4) / labels.size
    return StageResult(artifacts={"parsing": art},
                       meta={"method": method, "person_mask": config.person_mask if method == "classical" else None,
                             "area_share": [round(float(a), 4) for a in areas]})


@stage("background", "1")
def estimate_plate(frames: StageResult, parsing: StageResult, config: BackgroundConfig,
                   namespace: str | None = None) -> StageResult:
    """The static background over the clip (bc.jpg), person pixels excluded."""
    from models.face.background import estimate_background

    plate = estimate_background(frame_folder(frames), load_labels(parsing), config)
    with scratch("background") as work:
        Image.fromarray(plate).save(work / "bc.jpg", quality=95)
        art = get_store().put_file(work / "bc.jpg")
    return StageResult(artifacts={"bc": art})


@stage("composite", "1")
def composite_images(
    frames: StageResult,
    parsing: StageResult,
    background: StageResult,
    config: TorsoConfig,
    namespace: str | None = None,
) -> StageResult:
    """gt_imgs (frame over the plate) and torso_imgs (RGBA torso + neck, head removed)."""
    from models.face.composite import gt_image, torso_rgba

    images, labels = frame_folder(frames), load_labels(parsing)
    plate = load_image(background["bc"])
    if len(images) != len(labels):
        raise InputError(f"{len(images)} frames but {len(labels)} parsing maps; rerun the parsing")
    with scratch("composite") as work, ThreadPoolExecutor(IO_THREADS) as pool:
        (work / "gt_imgs").mkdir()
        (work / "torso_imgs").mkdir()
        writer = ImageWriter(pool)
        for i, (frame, lab) in enumerate(prefetched(pool, lambda i: (images[i], labels[i]), len(images))):
            writer.save(gt_image(frame, lab, plate), work / "gt_imgs" / f"{i}.jpg")
            writer.save(torso_rgba(frame, lab, config), work / "torso_imgs" / f"{i}.png", "RGBA")
        writer.close()
        store = get_store()
        return StageResult(artifacts={"gt_imgs": store.put_dir(work / "gt_imgs"),
                                      "torso_imgs": store.put_dir(work / "torso_imgs")})


@stage("blinks", "2")
def detect_blinks(landmarks: StageResult, config: BlinkConfig, fps: float = VIDEO_FPS,
                  namespace: str | None = None) -> StageResult:
    """Per-frame eye closure (AU45-like, 0 open .. 5 closed) from the eye landmarks, as OpenFace's au.csv."""
    from models.face.blink import au45_from_landmarks, write_au_csv

    au45 = au45_from_landmarks(load_landmarks(landmarks), config)
    with scratch("blinks") as work:
        write_au_csv(work / "au.csv", au45, fps)
        art = get_store().put_file(work / "au.csv")
    return StageResult(artifacts={"au": art},
                       meta={"blink_share": round(float(np.mean(au45 > 2.5)), 4)})
