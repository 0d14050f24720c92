#!/usr/bin/env bash
# A Debian 12 + Python 3.11 base image made from Debian's packages, for CPU worker images on
# machines that reach Debian's mirror but no image registry.
#
#   scripts/docker-base.sh [IMAGE]     # default talkflow-base:bookworm; nothing to do if it exists
#
# debootstrap (minbase: dpkg, apt, bash, coreutils) with python3, python3-venv and
# ca-certificates, imported with `docker import`. Needs root and debootstrap (installed with
# apt-get when missing). With registry access, `--build-arg BASE_IMAGE=python:3.11-slim-bookworm`
# does the same job without this script. Environment: DEBIAN_MIRROR (default: the mirror of
# this machine's apt sources, else http://deb.debian.org/debian), DEBIAN_SECURITY_MIRROR (default:
# the mirror + '-security'), TALKFLOW_BASE_FORCE=1 rebuilds.
set -euo pipefail

IMAGE=${1:-talkflow-base:bookworm}
SUITE=bookworm
say() { echo "docker-base: $*" >&2; }

if [[ -z ${TALKFLOW_BASE_FORCE:-} ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "$IMAGE exists"; exit 0
fi
[[ $(id -u) -eq 0 ]] || { say "debootstrap needs root"; exit 1; }
if ! command -v debootstrap >/dev/null; then
  say "installing debootstrap with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

mirror=${DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then  # the first Debian mirror apt uses here (deb822 or one-line sources)
  mirror=$(grep -rhoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
           | head -n 1 | tr -d ' ' || true)
  mirror=${mirror:-http://deb.debian.org/debian}
fi

root=$(mktemp -d /var/tmp/talkflow-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
t0=$SECONDS
say "debootstrap $SUITE from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" "$root" "$mirror" \
  >"$root.log" 2>&1 || { tail -n 20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
# no package lists or .debs in the image; apt inside builds fetches fresh lists
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/tmp/*
# the mirror this machine reaches, for apt-get in the Dockerfile
echo "deb $mirror $SUITE main" >"$root/etc/apt/sources.list"
echo "deb $mirror $SUITE-updates main" >>"$root/etc/apt/sources.list"
echo "deb ${DEBIAN_SECURITY_MIRROR:-${mirror%/}-security} $SUITE-security main" >>"$root/etc/apt/sources.list"
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' - "$IMAGE" >/dev/null
say "$IMAGE made in $((SECONDS - t0)) s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
