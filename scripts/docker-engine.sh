#!/usr/bin/env bash
# A Docker engine for the image build and the Docker work-pool test, on a machine without one.
#
#   scripts/docker-engine.sh start    # exit 0: an engine answers (already running, or started now)
#   scripts/docker-engine.sh stop     # stop the engine `start` started (by the PID it recorded)
#   scripts/docker-engine.sh status
#
# `start` uses a running engine when there is one and starts nothing. Otherwise, as root, it
# installs Debian's docker.io when dockerd is missing and starts `dockerd` in the background
# (no systemd needed), and Debian's docker-compose (Compose v1) when no Compose is installed. It
# exits 3, with the reason on one line, when no engine can be had (not root, no apt-get, install
# or start failed): callers skip on 3.
# State (PID, log): $TALKFLOW_DOCKER_STATE, default /run/talkflow-docker.
set -euo pipefail

STATE=${TALKFLOW_DOCKER_STATE:-/run/talkflow-docker}
PIDFILE=$STATE/dockerd.pid
LOG=$STATE/dockerd.log
START_WAIT_S=${TALKFLOW_DOCKER_WAIT_S:-60}

say() { echo "docker-engine: $*" >&2; }
cannot() { say "no Docker engine: $*"; exit 3; }
answers() { timeout 10 docker info >/dev/null 2>&1; }

ours() {  # PID of the dockerd this script started, if it still runs
  [[ -f $PIDFILE ]] || return 1
  local pid
  pid=$(cat "$PIDFILE")
  [[ -n $pid && -d /proc/$pid && $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]] && echo "$pid"
}

install_engine() {
  [[ $(id -u) -eq 0 ]] || cannot "dockerd is not installed and this is not root (install Docker, or run as root)"
  command -v apt-get >/dev/null || cannot "dockerd is not installed and there is no apt-get"
  local pkgs=(docker.io)
  has_compose || pkgs+=(docker-compose)
  say "installing Debian's ${pkgs[*]} with apt-get"
  local t0=$SECONDS
  apt-get update -qq >/dev/null 2>&1 || true
  # policy-rc.d 101: the package's scripts must not try to start a service (no init system here)
  local policy=/usr/sbin/policy-rc.d restore=""
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && restore=rm; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >"$STATE/apt.log" 2>&1 \
    || { [[ -n $restore ]] && rm -f "$policy"; cannot "apt-get install ${pkgs[*]} failed (see $STATE/apt.log)"; }
  [[ -n $restore ]] && rm -f "$policy"
  say "${pkgs[*]} installed in $((SECONDS - t0)) s"
}

has_compose() { docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null; }

install_compose() {  # Compose only checks files here (no registry to pull its images from)
  has_compose && return 0
  [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null || return 0
  say "installing Debian's docker-compose with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >"$STATE/apt.log" 2>&1 \
    || say "apt-get install docker-compose failed (see $STATE/apt.log)"
}

start() {
  mkdir -p "$STATE"
  if answers; then say "an engine is running"; install_compose; return 0; fi
  if ours >/dev/null; then cannot "the dockerd started earlier (PID $(cat "$PIDFILE")) does not answer; see $LOG"; fi
  [[ $(id -u) -eq 0 ]] || cannot "none answers and only root can start dockerd here"
  command -v dockerd >/dev/null || install_engine
  install_compose
  command -v dockerd >/dev/null || cannot "dockerd is still missing after the install"
  local t0=$SECONDS
  # its own session: the engine outlives this script and is stopped by `stop`, by PID
  setsid dockerd >"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  while ! answers; do
    if ! ours >/dev/null; then rm -f "$PIDFILE"; cannot "dockerd exited: $(tail -n 3 "$LOG" | tr '\n' ' ')"; fi
    if ((SECONDS - t0 > START_WAIT_S)); then stop >/dev/null 2>&1 || true; cannot "dockerd did not answer within ${START_WAIT_S} s (see $LOG)"; fi
    sleep 1
  done
  say "dockerd started (PID $(cat "$PIDFILE"), $((SECONDS - t0)) s, log $LOG)"
}

stop() {
  local pid
  if ! pid=$(ours); then rm -f "$PIDFILE"; say "no engine of ours to stop"; return 0; fi
  kill -TERM "$pid"
  for _ in $(seq 60); do [[ -d /proc/$pid ]] || break; sleep 0.5; done
  if [[ -d /proc/$pid ]]; then say "dockerd $pid did not stop in 30 s: killing it"; kill -KILL "$pid"; fi
  rm -f "$PIDFILE"
  say "dockerd $pid stopped"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status)
    if answers; then echo "running$(pid=$(ours) && echo " (started by this script, PID $pid)")"; else echo "not running"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
