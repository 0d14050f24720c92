#!/usr/bin/env bash
# System packages of the worker image, on either base: Ubuntu 22.04 (NVIDIA's CUDA images; Python
# 3.11 from the deadsnakes PPA) or Debian 12 (Python 3.11 is the system Python).
#
#   install-system.sh runtime   Python 3.11 + venv, ffmpeg, espeak-ng, tini, and what Triton needs
#                               to compile its launcher at the first GPU kernel: gcc and Python.h
#   install-system.sh build     the same + git, g++, ninja (pytorch3d from source)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
what=${1:?runtime or build}
. /etc/os-release

pkgs=(ca-certificates ffmpeg espeak-ng tini gcc libc6-dev)
[[ $what == build ]] && pkgs+=(git g++ make ninja-build)
ca=()  # a CA bundle (docker/with-ca.sh exports it) for https sources behind a TLS-re-signing proxy
if [[ -n ${SSL_CERT_FILE:-} ]]; then ca=(-o "Acquire::https::CAInfo=$SSL_CERT_FILE"); fi
apt_opts=(-y -q --no-install-recommends "${ca[@]}")

apt-get update -q "${ca[@]}"
case $ID in
  debian)
    [[ ${VERSION_ID:-} == 12 ]] || { echo "install-system: Debian $VERSION_ID: need 12 (Python 3.11)" >&2; exit 1; }
    apt-get install "${apt_opts[@]}" python3 python3-dev python3-venv "${pkgs[@]}"
    ;;
  ubuntu)
    if ! apt-cache show python3.11-venv >/dev/null 2>&1; then
      apt-get install "${apt_opts[@]}" software-properties-common gpg-agent
      add-apt-repository -y ppa:deadsnakes/ppa
      apt-get update -q "${ca[@]}"
      apt-mark auto software-properties-common gpg-agent >/dev/null
    fi
    apt-get install "${apt_opts[@]}" python3.11 python3.11-dev python3.11-venv "${pkgs[@]}"
    apt-get purge -y -q --auto-remove software-properties-common gpg-agent >/dev/null 2>&1 || true
    ;;
  *) echo "install-system: unsupported base $ID (use a Debian 12 or Ubuntu 22.04 image)" >&2; exit 1 ;;
esac
apt-get clean
rm -rf /var/lib/apt/lists/*
python3.11 -c "import sysconfig, os; h = sysconfig.get_paths()['include']; assert os.path.exists(h + '/Python.h'), h"
gcc --version | head -n 1
