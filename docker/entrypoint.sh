#!/usr/bin/env bash
# talkflow container entrypoint.
#
#   entrypoint.sh [worker] [extra `prefect worker start` options]
#       wait for the Prefect API, save the result-storage block, then exec a worker:
#       prefect worker start --pool $TALKFLOW_WORKER_POOL --type $TALKFLOW_WORKER_TYPE ...
#   entrypoint.sh setup [pools.setup options]
#       wait for the API, create pools/limits/block, then `prefect deploy --all`
#   entrypoint.sh <command ...>
#       anything else (a Docker worker starts runs as `prefect flow-run execute`): set up the
#       environment, then exec the command.
#
# Environment: PREFECT_API_URL (required for worker/setup), TALKFLOW_WORKER_POOL,
# TALKFLOW_WORKER_TYPE (docker|process, default docker), TALKFLOW_WORKER_NAME,
# TALKFLOW_WORKER_LIMIT (runs at once), TALKFLOW_API_WAIT_S (default 120), TALKFLOW_PYTHON,
# TALKFLOW_CA_BUNDLE (a CA bundle file to trust, mounted read-only; see with-ca.sh),
# and the store settings: TALKFLOW_STORE_URL, TALKFLOW_REDIS_URL, AWS_*.
# A Docker worker is prefect-docker's, started through pools.docker_worker (one clear
# error line for a GPU run on a host without the NVIDIA runtime).
# The worker runs under pools.worker_guard, exec'd (it replaces this shell), so `docker stop`'s
# one SIGTERM stops it within TALKFLOW_WORKER_STOP_S (default 8 s); runs in progress go on
# (docs/production.md).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "${TALKFLOW_CODE_DIR:-$HERE/..}"
# the checkout's venv (make setup) when there is one, else the image's python
if [[ -n ${TALKFLOW_PYTHON:-} ]]; then PYTHON=$TALKFLOW_PYTHON
elif [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python
else PYTHON=$(command -v python3 || command -v python || echo python); fi

die() { echo "entrypoint: $*" >&2; exit 2; }

# A Docker work pool's template renders a setting the worker lacks as "": treat it as unset
# (AWS_ENDPOINT_URL="" would break boto, TALKFLOW_STORE_URL="" means the default store).
for name in $(compgen -e); do
  case $name in
    TALKFLOW_*|AWS_*) if [[ -z ${!name-} ]]; then unset "$name"; fi ;;
  esac
done

# an extra CA bundle, when TALKFLOW_CA_BUNDLE names one: trusted by pip, requests, boto, httpx
# shellcheck source=docker/with-ca.sh
. "$HERE/with-ca.sh"

# Prefect reads its settings once, when imported: result storage must be in the environment
# before any prefect process starts (the worker, and each run it spawns).
run_env=$("$PYTHON" -m pools.setup env) || die "cannot read talkflow's settings (see above)"
eval "$run_env"

need_api() {
  [[ -n ${PREFECT_API_URL:-} ]] || die "set PREFECT_API_URL to the Prefect server's API (e.g. http://prefect-server:4200/api)"
  "$PYTHON" -m pools.setup wait --timeout "${TALKFLOW_API_WAIT_S:-120}"
}

mode=${1:-worker}
case $mode in
  worker)
    if [[ $# -gt 0 ]]; then shift; fi
    pool=${TALKFLOW_WORKER_POOL:-}
    type=${TALKFLOW_WORKER_TYPE:-docker}
    [[ -n $pool ]] || die "set TALKFLOW_WORKER_POOL to the work pool to serve (e.g. gpu-a100, cpu)"
    [[ $type == docker || $type == process ]] || die "TALKFLOW_WORKER_TYPE must be docker or process, not '$type'"
    [[ -z ${TALKFLOW_WORKER_LIMIT:-} || ${TALKFLOW_WORKER_LIMIT} =~ ^[1-9][0-9]*$ ]] \
      || die "TALKFLOW_WORKER_LIMIT must be a positive integer, not '${TALKFLOW_WORKER_LIMIT}'"
    need_api
    "$PYTHON" -m pools.setup result-storage >/dev/null
    # pools come from pools/setup.py (a worker would create a bare, GPU-less one)
    args=(worker start --pool "$pool" --type "$type" --install-policy never --no-create-pool-if-not-found)
    if [[ -n ${TALKFLOW_WORKER_NAME:-} ]]; then args+=(--name "$TALKFLOW_WORKER_NAME"); fi
    if [[ -n ${TALKFLOW_WORKER_LIMIT:-} ]]; then args+=(--limit "$TALKFLOW_WORKER_LIMIT"); fi
    echo "entrypoint: prefect ${args[*]} $*" >&2
    # the guard stops the worker on one SIGTERM (docker stop), within TALKFLOW_WORKER_STOP_S
    guard=("$PYTHON" -m pools.worker_guard)
    if [[ $type == docker ]]; then exec "${guard[@]}" "$PYTHON" -m pools.docker_worker "${args[@]}" "$@"; fi
    exec "${guard[@]}" "$PYTHON" -m prefect "${args[@]}" "$@"
    ;;
  setup)
    shift
    need_api
    "$PYTHON" -m pools.setup all "$@"
    exec "$PYTHON" -m prefect --no-prompt deploy --all
    ;;
  *)
    exec "$@"
    ;;
esac
