#!/usr/bin/env bash
# `make test-docker`: prove the container deployment on a real Docker engine.
#
#   docker/test-docker.sh [PYTEST ARGS...]
#
# 1. Uses the Docker engine that answers, if any. Otherwise (root only) installs docker.io,
#    docker-compose and debootstrap from apt when missing, starts dockerd in the background,
#    and stops it again by its PID when done.
# 2. Makes sure the base image exists: pulls it, or, where no registry can be reached, builds a
#    stand-in from Debian packages (docker/stand-in-base.sh).
# 3. Downloads the wheels the images need on the host (docker/wheelhouse.sh), so the image
#    builds need no index.
# 4. Runs `pytest tests/docker`: builds the CPU image, runs it, checks it over HTTP, runs
#    docker-compose.yml, lints the Dockerfiles and the compose file.
#
# When it cannot run at all (no engine and no root, apt or dockerd failing) it says so and
# exits 1 under CI (CI set) or TLSTM_DOCKER_REQUIRED=1, and 0 with SKIPPED otherwise.
# Everything expensive is cached: the engine's images and layers, docker/.build/ (the stand-in
# root file system, the wheelhouses).
#
# Environment:
#   PYTHON                     interpreter with the dev extra (default .venv/bin/python)
#   TLSTM_DOCKER_BASE_IMAGE    base of the CPU and training images (default python:3.11-slim)
#   TLSTM_DOCKER_TRAIN=1       also build the training image and run the compose `train` profile
#   TLSTM_DOCKER_GPU_STANDIN=1 also build Dockerfile.gpu on the CPU base (no CUDA) and check that
#                              it refuses to start without a GPU
set -euo pipefail
cd "$(dirname "$0")/.."

build=docker/.build
mkdir -p "$build"
started=$SECONDS
say() { echo "test-docker: [$((SECONDS - started))s] $*" >&2; }
required() { [[ -n ${CI:-} || ${TLSTM_DOCKER_REQUIRED:-0} == 1 ]]; }
cannot_run() {
    if required; then
        say "FAILED: the Docker checks cannot run here: $*"
        exit 1
    fi
    say "SKIPPED: the Docker checks cannot run here: $* (under CI this fails)"
    exit 0
}

py=${PYTHON:-.venv/bin/python}
[[ -x $py ]] || py=$(command -v python3)
"$py" -c 'import pytest, httpx' 2>/dev/null \
    || { say "FAILED: $py lacks pytest/httpx: pip install -e '.[cpu,dev]'"; exit 1; }

# ---- 1. the engine ----
dockerd_pid=
stop_dockerd() {
    local status=$?
    if [[ -n $dockerd_pid ]] && kill -0 "$dockerd_pid" 2>/dev/null; then
        say "stopping the dockerd this script started (pid $dockerd_pid)"
        kill -TERM "$dockerd_pid" 2>/dev/null || true
        for _ in $(seq 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$dockerd_pid" 2>/dev/null; then
            say "dockerd did not stop in 30 s; killing it"
            kill -KILL "$dockerd_pid" 2>/dev/null || true
        fi
        wait "$dockerd_pid" 2>/dev/null || true
        rm -f "$build/dockerd.pid"
    fi
    exit "$status"
}
trap stop_dockerd EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if docker info >/dev/null 2>&1; then
    say "using the running Docker engine $(docker version --format '{{.Server.Version}}')"
else
    [[ $(id -u) -eq 0 ]] || cannot_run "no Docker engine answers, and starting one needs root"
    missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if [[ ${#missing[@]} -gt 0 ]]; then
        command -v apt-get >/dev/null || cannot_run "no engine, and no apt-get to install ${missing[*]}"
        say "installing ${missing[*]} with apt-get (log: $build/apt.log)"
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"; } \
            > "$build/apt.log" 2>&1 \
            || { tail -n 20 "$build/apt.log" >&2; cannot_run "apt-get install ${missing[*]} failed"; }
    fi
    say "starting dockerd (log: $build/dockerd.log)"
    # Only the default unix socket: the engine listens on no TCP port.
    dockerd --host=unix:///var/run/docker.sock > "$build/dockerd.log" 2>&1 &
    dockerd_pid=$!
    echo "$dockerd_pid" > "$build/dockerd.pid"
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        kill -0 "$dockerd_pid" 2>/dev/null \
            || { tail -n 20 "$build/dockerd.log" >&2; dockerd_pid=; cannot_run "dockerd exited at start-up"; }
        sleep 1
    done
    docker info >/dev/null 2>&1 || { tail -n 20 "$build/dockerd.log" >&2; cannot_run "dockerd did not answer within 60 s"; }
    say "dockerd $(docker version --format '{{.Server.Version}}') is up (pid $dockerd_pid)"
fi
if ! command -v docker-compose >/dev/null && ! docker compose version >/dev/null 2>&1; then
    cannot_run "neither docker-compose nor the docker compose plugin is installed"
fi

# ---- 2. the base image ----
base=${TLSTM_DOCKER_BASE_IMAGE:-python:3.11-slim}
if docker image inspect "$base" >/dev/null 2>&1; then
    say "base image $base is present"
elif timeout 120 docker pull "$base" >/dev/null 2>&1; then
    say "pulled $base"
else
    say "cannot pull $base (no registry?); building a stand-in from Debian packages"
    docker/stand-in-base.sh "$base"
fi
if [[ $(docker image inspect --format '{{index .Config.Labels "org.tlstm.stand-in"}}' "$base") == true ]]; then
    say "NOTE: $base is the local Debian stand-in, not the Docker Official Image"
fi
pyver=$(docker run --rm --network none "$base" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# ---- 3. the wheelhouses ----
export PYTHON=$py
TLSTM_DOCKER_WHEELHOUSE=$(docker/wheelhouse.sh cpu "$pyver")
export TLSTM_DOCKER_WHEELHOUSE TLSTM_DOCKER_BASE_IMAGE=$base TLSTM_DOCKER_PIP_NO_INDEX=1
if [[ ${TLSTM_DOCKER_TRAIN:-0} == 1 ]]; then
    TLSTM_DOCKER_TRAIN_WHEELHOUSE=$(docker/wheelhouse.sh train "$pyver")
    export TLSTM_DOCKER_TRAIN_WHEELHOUSE
fi
if [[ ${TLSTM_DOCKER_GPU_STANDIN:-0} == 1 ]]; then
    TLSTM_DOCKER_GPU_WHEELHOUSE=$(docker/wheelhouse.sh gpu "$pyver")
    export TLSTM_DOCKER_GPU_WHEELHOUSE
fi
say "wheelhouse ready: $TLSTM_DOCKER_WHEELHOUSE"

# ---- 4. the checks ----
# The engine is known to work now: a test that finds none must fail, not skip.
export TLSTM_DOCKER_REQUIRED=1
rm -rf "$build/logs"   # this run's build and container logs only
set +e
"$py" -m pytest tests/docker -m docker -p no:cacheprovider -ra "$@"
status=$?
set -e
# Safety net: what a test left behind carries its label or its compose project's prefix.
leftovers=$( { docker ps -aq --filter label=org.tlstm.test
               docker ps -a --format '{{.ID}} {{.Label "com.docker.compose.project"}}' \
                   | awk '$2 ~ /^tlstmtest/ {print $1}'; } | sort -u)
if [[ -n $leftovers ]]; then
    say "removing containers the tests left behind: $(echo "$leftovers" | tr '\n' ' ')"
    # shellcheck disable=SC2086
    docker rm -f $leftovers >/dev/null || true
fi
for kind in volume network; do
    stale=$(docker "$kind" ls -q --filter label=com.docker.compose.project | while read -r id; do
        project=$(docker "$kind" inspect --format '{{index .Labels "com.docker.compose.project"}}' "$id")
        [[ $project == tlstmtest* ]] && echo "$id"
    done)
    # shellcheck disable=SC2086
    [[ -z $stale ]] || docker "$kind" rm $stale >/dev/null || true
done
say "pytest exited $status"
exit "$status"
