#!/usr/bin/env bash
# install-venv.sh LOCK [PYTORCH3D_WHEELS]: /opt/venv with the pinned Python packages of LOCK.
# A pytorch3d wheel in PYTORCH3D_WHEELS (built from source for the GPU) replaces the lock's
# prebuilt easypytorch3d. pip's downloads stay in /root/.cache/pip (a BuildKit cache mount:
# a rebuild after a lock change downloads only what changed).
set -euo pipefail
lock=$1
wheels=(${2:+$2/*.whl})
[[ -e ${wheels[0]:-} ]] || wheels=()
[[ -x /opt/venv/bin/python ]] || python3.11 -m venv /opt/venv
pip=(/opt/venv/bin/python -m pip install -q --progress-bar off)
"${pip[@]}" 'pip>=25' 'setuptools<82' wheel
if ((${#wheels[@]})); then
  grep -v '^easypytorch3d==' "$lock" >/tmp/requirements.txt
  "${pip[@]}" -r /tmp/requirements.txt "${wheels[@]}"
  rm /tmp/requirements.txt
else
  "${pip[@]}" -r "$lock"
fi
/opt/venv/bin/python -m pip check
