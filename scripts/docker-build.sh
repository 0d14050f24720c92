#!/usr/bin/env bash
# Build the worker image (docker/Dockerfile.worker) with BuildKit.
#
#   scripts/docker-build.sh cpu [TAG]   # default talkflow-worker:cpu, on the Debian base that
#                                       # scripts/docker-base.sh makes when it is missing
#   scripts/docker-build.sh gpu [TAG]   # default talkflow-worker:latest, on NVIDIA's CUDA images
#   ... -- [more `docker build` options]
#
# Builds on the host's network (no bridge traffic), and passes a CA bundle as the BuildKit secret
# `ca_bundle` when TALKFLOW_CA_BUNDLE (default: $PIP_CERT, then $SSL_CERT_FILE) names a file; set
# TALKFLOW_CA_BUNDLE= (empty) to pass none. Environment: TALKFLOW_BASE_IMAGE (CPU base, default
# talkflow-base:bookworm), DOCKER (the client). Prints the build time and the image size last.
set -euo pipefail
cd "$(dirname "$0")/.."

kind=${1:-cpu}
shift || true
tag=""
if [[ $# -gt 0 && $1 != -- ]]; then tag=$1; shift; fi
if [[ ${1:-} == -- ]]; then shift; fi
say() { echo "docker-build: $*" >&2; }

args=(-f docker/Dockerfile.worker --network host)
case $kind in
  cpu)
    tag=${tag:-talkflow-worker:cpu}
    base=${TALKFLOW_BASE_IMAGE:-talkflow-base:bookworm}
    if [[ $base == talkflow-base:* ]]; then bash scripts/docker-base.sh "$base"; fi
    args+=(--build-arg "BASE_IMAGE=$base" --build-arg PYTORCH3D=wheel) ;;
  gpu) tag=${tag:-talkflow-worker:latest} ;;
  *) echo "usage: $0 cpu|gpu [TAG] [-- docker build options]" >&2; exit 2 ;;
esac

ca=${TALKFLOW_CA_BUNDLE-${PIP_CERT:-${SSL_CERT_FILE:-}}}
if [[ -n $ca ]]; then
  [[ -s $ca ]] || { say "CA bundle $ca is not a readable file"; exit 2; }
  args+=(--secret "id=ca_bundle,src=$ca")
fi

# A client that runs BuildKit builds: one with the buildx plugin, or a pre-23 client with the
# builder built in (Debian's docker.io 20.10 installs one at /usr/bin/docker).
client=""
for c in ${DOCKER:-} docker /usr/bin/docker; do
  command -v "$c" >/dev/null || continue
  if "$c" buildx version >/dev/null 2>&1; then client=$c; break; fi
  major=$("$c" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)
  if [[ $major =~ ^[0-9]+$ ]] && ((major < 23)); then client=$c; break; fi
done
[[ -n $client ]] || { say "no Docker client with BuildKit: install the buildx plugin"; exit 2; }

t0=$(date +%s.%N)
DOCKER_BUILDKIT=1 "$client" build "${args[@]}" -t "$tag" "$@" .
seconds=$(echo "$(date +%s.%N) - $t0" | bc)
size=$("$client" image inspect -f '{{.Size}}' "$tag")
printf '{"image": "%s", "build_s": %.1f, "size_bytes": %d, "size_gb": %.2f}\n' "$tag" "$seconds" "$size" \
  "$(echo "$size / 1000000000" | bc -l)"
