"""MediaPipe's shipped networks against the fallbacks, on the sample portrait where the truth is known.

The clip is the project's talking photo (models/synth/talking_photo.py: skimage's astronaut, a
seeded speech-like loudness curve, head motion): its head motion (rotation, shift) and its lower
lip's drop per frame are known exactly, so each method's points can be mapped back to the still
face and compared with the truth:
  opening_rmse_px   inner-lip opening |66 - 62| minus the known drop, RMS about its median (px)
  opening_corr      correlation of that opening with the known drop
  static_jitter_px  points that do not move on the face (brows, nose, eyes, upper lip), mapped back
                    through the known head motion: RMS of their spread over time (px)
  lower_lip_jitter_px  points 57 and 66, mapped back and their known drop removed: spread (px)
for dlib (68 points per frame; the pipeline's default One-Euro smoothing and raw), the mesh
(MediaPipe-style tracking from the previous frame's points, 468 -> 68) and dlib with the mesh's
mouth (the pipeline's "mouth: mesh"); also the least-squares slope of each opening against the
known drop (1 = exact) and the scatter about that line (px).
Person foreground: the classical parser's (background difference; plate bootstrapped from the
clip) against the selfie segmentation's, (a) on a known case: the still portrait's person (its
segmentation mask) moved with the head motion over a static photo (skimage's coffee), truth =
the moved mask (the mask comes from the network on the still photo, so this measures recovery of
the person on a new background and position, not the mask's own edges); (b) on the talking clip,
where the whole frame moves: their agreement (IoU) only; (c) a studio-like known case whose
truth no network made: the talking face cut by an ellipse, a neck and a shirt over a static wall.
Tilted heads: the still portrait turned in its plane by 0-60 degrees; dlib alone against dlib
with the BlazeFace + mesh fallback (the pipeline's default), mean error of points 27-67 per
interocular distance (null: no face found).
On the still astronaut photo: detection score, and the mesh's 68 points against dlib's (px).
Prints one JSON object as its last line. Runtime about 1-2 min on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STATIC = np.r_[17:36, 36:48, 49:54, 61:64]  # points the animation does not move on the face


def speech_like(t: int, seed: int) -> np.ndarray:
    """(T,) loudness in [0,1]: syllables of random strength at about 4 per second, and pauses."""
    from scipy.ndimage import gaussian_filter1d

    rng = np.random.default_rng(seed)
    env = np.zeros(t)
    i = 2
    while i < t - 2:
        n = int(rng.integers(3, 8))
        env[i : i + n] = rng.uniform(0.3, 1.0) if rng.random() > 0.15 else 0.0
        i += n + int(rng.integers(0, 3))
    return np.clip(gaussian_filter1d(env, 1.0), 0, 1)


def to_face(pts: np.ndarray, angles: np.ndarray, shifts: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Frame points (T,K,2) -> the still portrait's coordinates (inverse of the head motion)."""
    ca, sa = np.cos(angles)[:, None], np.sin(angles)[:, None]
    px = pts[..., 0] - centre[0] - shifts[0][:, None]
    py = pts[..., 1] - centre[1] - shifts[1][:, None]
    return np.stack([ca * px + sa * py + centre[0], -sa * px + ca * py + centre[1]], -1)


def point_scores(lms: np.ndarray, drops: np.ndarray, angles, shifts, centre) -> dict:
    q = to_face(lms.astype(np.float64), angles, shifts, centre)  # (T,68,2)
    opening = np.linalg.norm(q[:, 66] - q[:, 62], axis=-1)
    err = opening - drops
    lower = q[:, [57, 66]] - np.stack([np.zeros_like(drops), drops], -1)[:, None]
    spread = lambda x: float(np.sqrt(np.mean(x.var(axis=0).sum(-1))))  # noqa: E731
    slope, icpt = np.polyfit(drops, opening, 1)
    return {
        "opening_slope": round(float(slope), 3),
        "opening_scatter_px": round(float(np.std(opening - icpt - slope * drops)), 3),
        "opening_rmse_px": round(float(np.sqrt(np.mean((err - np.median(err)) ** 2))), 3),
        "opening_corr": round(float(np.corrcoef(opening, drops)[0, 1]), 4),
        "static_jitter_px": round(spread(q[:, STATIC]), 3),
        "lower_lip_jitter_px": round(spread(lower), 3),
    }


def studio_case(talking: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T,S,S,3) and their exact person mask (S,S): the talking face cut by an ellipse,
    a skin-coloured neck and a dark shirt, over a static smooth wall (no network made the mask)."""
    from scipy.ndimage import gaussian_filter

    size = talking.shape[1]
    yy, xx = np.mgrid[0:size, 0:size]
    jaw_w, chin, cx = lm[16, 0] - lm[0, 0], lm[8, 1], lm[:17, 0].mean()
    top = lm[17:27, 1].min() - 0.75 * (chin - lm[17:27, 1].mean())
    head = ((xx - cx) / (0.58 * jaw_w)) ** 2 + ((yy - 0.5 * (top + chin)) / (0.5 * (chin - top) + 4)) ** 2 <= 1
    neck = (np.abs(xx - cx) < 0.3 * jaw_w) & (yy > chin - 0.15 * jaw_w) & (yy < chin + 0.45 * jaw_w)
    shoulder = chin + 0.4 * jaw_w
    torso = (yy > shoulder + 0.3 * np.maximum(np.abs(xx - cx) - 0.45 * jaw_w, 0)) & (yy > shoulder)
    rng = np.random.default_rng(0)
    wall = np.stack([150 + 50 * xx / size, 170 - 30 * yy / size, 140 + 0 * xx], -1)
    wall = wall + 12 * gaussian_filter(rng.normal(size=(size, size, 3)), (30, 30, 0)) * 30
    skin = np.median(talking[0][int(lm[29, 1]) : int(lm[33, 1]), int(lm[3, 0]) : int(lm[4, 0]) + 5].reshape(-1, 3), 0)
    frames = np.empty_like(talking)
    for i, f in enumerate(talking):
        g = np.clip(wall, 0, 255).astype(np.uint8)
        g[torso] = (40, 50, 120)
        g[neck] = skin
        g[head] = f[head]
        frames[i] = g
    return frames, head | neck | torso


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=75)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", type=Path, default=Path(sys.prefix) / "share/talkflow/mediapipe")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from skimage import data

    from models.face.blazeface import BlazeFaceDetector
    from models.face.face_mesh import MESH_TO_68, FaceMesh, track_mesh
    from models.face.landmarks import largest_face_landmarks
    from models.face.parsing import BG, ParsingConfig, parse_frames
    from models.face.selfie_segmentation import SelfieSegmenter
    from models.face.video_landmarks import LandmarkConfig, SmoothConfig, smooth_landmarks, track_video_landmarks
    from models.synth.talking_photo import _head_noise, _mouth_height, animate_portrait, sample_portrait
    from talkflow.contract import VIDEO_FPS

    m = args.models
    detector = BlazeFaceDetector(m / "face_detection_short_range.tflite")
    mesh = FaceMesh(m / "face_landmark.tflite")
    seg = SelfieSegmenter(m / "selfie_segmentation.tflite")
    out: dict = {"frames": args.frames}

    # the still photo
    astro = data.astronaut()
    lm_astro = largest_face_landmarks(astro)
    det = detector.detect(astro)
    full = BlazeFaceDetector(m / "face_detection_full_range_sparse.tflite").detect(astro)
    from models.face.face_mesh import refine, roi_from_detection

    res = refine(mesh, astro, roi_from_detection(det[0]))
    d68 = np.linalg.norm(res.landmarks68() - lm_astro, axis=-1)
    out["photo"] = {
        "short_range_score": round(det[0].score, 4), "full_range_score": round(full[0].score, 4),
        "faces_found": len(det), "mesh_score": round(res.score, 4),
        "mesh_vs_dlib_mouth_px": round(float(d68[48:68].mean()), 3),
        "mesh_vs_dlib_eyes_nose_brows_px": round(float(d68[17:48].mean()), 3),
        "mesh_vs_dlib_jaw_px": round(float(d68[:17].mean()), 3),
        "interocular_px": round(float(np.linalg.norm(lm_astro[36:42].mean(0) - lm_astro[42:48].mean(0))), 2),
    }

    # the talking clip with known motion
    portrait = sample_portrait(512)
    lm0 = largest_face_landmarks(portrait)
    t = args.frames
    env = speech_like(t, args.seed)
    frames = animate_portrait(portrait, lm0, env, seed=args.seed)
    drops = env * 0.6 * _mouth_height(lm0.astype(np.float64))
    noise = _head_noise(np.random.default_rng(args.seed), t, VIDEO_FPS)
    angles, shifts, centre = np.deg2rad(2.0) * noise[0], 3.0 * noise[1:], lm0.astype(np.float64).mean(0)
    score = lambda lms: point_scores(lms, drops, angles, shifts, centre)  # noqa: E731

    t0 = time.perf_counter()
    dl = track_video_landmarks(frames)
    t_dlib = (time.perf_counter() - t0) / t
    t0 = time.perf_counter()
    pts, found = track_mesh(frames, mesh, detector.detect)
    t_mesh = (time.perf_counter() - t0) / t
    mesh68 = pts[:, MESH_TO_68, :2]
    t0 = time.perf_counter()
    hy = track_video_landmarks(frames, LandmarkConfig(mouth="mesh"), mesh=m / "face_landmark.tflite")
    t_hybrid = (time.perf_counter() - t0) / t
    out["landmarks"] = {
        "dlib_raw": score(dl.raw), "dlib_smoothed": score(dl.lms),
        "mesh_raw": score(mesh68), "mesh_smoothed": score(smooth_landmarks(mesh68, SmoothConfig())),
        "dlib_with_mesh_mouth_smoothed": score(hy.lms),
        "mesh_found_share": round(float(found.mean()), 4),
        "ms_per_frame": {"dlib": round(1e3 * t_dlib, 1), "mesh_tracking": round(1e3 * t_mesh, 1),
                         "dlib_with_mesh_mouth": round(1e3 * t_hybrid, 1)},
    }

    # tilted heads: the still portrait turned in its plane; truth = dlib's upright points turned alike
    from PIL import Image

    from talkflow.errors import FaceNotFound

    iod = float(np.linalg.norm(lm0[36:42].mean(0) - lm0[42:48].mean(0)))
    tilted = {}
    for deg in (0, 15, 30, 45, 60):
        img = np.asarray(Image.fromarray(portrait).rotate(deg, resample=Image.BILINEAR, center=(256, 256)))
        a = np.deg2rad(deg)
        truth_lm = (lm0 - 256) @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]]).T + 256
        row = {}
        for name, kw in (("dlib", {}), ("dlib_or_mesh", {"mesh": m / "face_landmark.tflite",
                                                          "detector": m / "face_detection_short_range.tflite"})):
            try:
                got = track_video_landmarks(img[None], smooth=None, **kw).lms[0]
                row[name] = round(float(np.linalg.norm(got - truth_lm, axis=-1)[27:68].mean()) / iod, 4)
            except FaceNotFound:
                row[name] = None  # no face found
        tilted[str(deg)] = row
    out["tilted_head_error_per_interocular"] = tilted

    # person foreground
    def classical_fg(clip: np.ndarray, lms: np.ndarray) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        labels = parse_frames(clip, lms, config=ParsingConfig(method="classical"))
        return labels != BG, (time.perf_counter() - t0) / len(clip)

    def selfie_fg(clip: np.ndarray) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        masks = np.stack([seg.mask(f) for f in clip])
        return masks, (time.perf_counter() - t0) / len(clip)

    still_mask = seg.mask(portrait)
    coffee = np.asarray(Image.fromarray(data.coffee()[:, 100:500]).resize((512, 512), Image.BILINEAR))
    moved = animate_portrait(portrait, lm0, np.zeros(t), seed=args.seed)
    truth = animate_portrait(np.repeat(still_mask[..., None] * np.uint8(255), 3, -1), lm0, np.zeros(t),
                             seed=args.seed)[..., 0] > 127
    comp = np.where(truth[..., None], moved, coffee[None]).astype(np.uint8)
    lms_comp = track_video_landmarks(comp).lms
    studio, studio_truth = studio_case(frames[:25], lm0)
    lms_studio = track_video_landmarks(studio).lms
    studio_cls = parse_frames(studio, lms_studio, config=ParsingConfig(method="classical")) != BG
    studio_seg = parse_frames(studio, lms_studio, config=ParsingConfig(method="classical"),
                              segmentation=m / "selfie_segmentation.tflite") != BG
    t0 = time.perf_counter()
    seg_parse_known = parse_frames(comp, lms_comp, config=ParsingConfig(method="classical"),
                                   segmentation=m / "selfie_segmentation.tflite") != BG
    t_seg_parse = (time.perf_counter() - t0) / t
    cfg_known, t_cls = classical_fg(comp, lms_comp)
    seg_known, t_seg = selfie_fg(comp)
    cfg_clip, _ = classical_fg(frames, dl.lms)
    seg_clip, _ = selfie_fg(frames)
    out["foreground"] = {
        "known_case_iou_classical": round(float(np.mean([iou(a, b) for a, b in zip(cfg_known, truth)])), 4),
        "known_case_iou_segmentation": round(float(np.mean([iou(a, b) for a, b in zip(seg_known, truth)])), 4),
        "known_case_iou_parser_with_segmentation": round(float(np.mean([iou(a, b) for a, b in
                                                                         zip(seg_parse_known, truth)])), 4),
        "studio_iou_classical": round(float(np.mean([iou(a, studio_truth) for a in studio_cls])), 4),
        "studio_iou_parser_with_segmentation": round(float(np.mean([iou(a, studio_truth) for a in studio_seg])), 4),
        "talking_clip_iou_between": round(float(np.mean([iou(a, b) for a, b in zip(cfg_clip, seg_clip)])), 4),
        "talking_clip_share_classical": round(float(cfg_clip.mean()), 4),
        "talking_clip_share_segmentation": round(float(seg_clip.mean()), 4),
        "ms_per_frame": {"classical_parsing": round(1e3 * t_cls, 1), "segmentation": round(1e3 * t_seg, 1),
                         "parsing_with_segmentation": round(1e3 * t_seg_parse, 1)},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
