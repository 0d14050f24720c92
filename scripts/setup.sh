#!/usr/bin/env bash
# Set up everything talkflow needs: system packages (apt), .venv, pinned Python packages.
# A second run with nothing changed returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
SYSTEM_PACKAGES=(ffmpeg espeak-ng)

missing=()
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || missing+=(ffmpeg)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "setup: installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing system packages: ${missing[*]}" >&2
    echo "setup: install them (Debian/Ubuntu: sudo apt-get install ${SYSTEM_PACKAGES[*]}) and rerun" >&2
    exit 1
  fi
fi

# Python packages: reinstall only when the pins or the project metadata change.
stamp=$VENV/.talkflow-installed
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
  exit 0
fi
[[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
echo "setup: installing pinned Python packages into $VENV (a few minutes the first time)"
pip_install() {
  # pip warns once per package about absent local index folders; keep the rest of its output
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" 2>&1 \
    | { grep -v "^WARNING: Location .* is ignored" || true; }
}
pip_install --upgrade 'pip>=25' 'setuptools<82' wheel
pip_install -r requirements.lock
PYTHONWARNINGS=ignore pip_install --no-deps --no-build-isolation -e .  # quiet the editable-install notice
bash scripts/install_mediapipe_models.sh "$VENV"
"$VENV/bin/python" -m pip check
echo "$want" > "$stamp"
