#!/usr/bin/env bash
# Build a local stand-in for the python:3.11-slim base image where no registry can be reached.
#
# usage: docker/stand-in-base.sh [TAG]        (default TAG: python:3.11-slim; needs root)
#
# Debian bookworm's own python3 (3.11) with venv and ensurepip, made by debootstrap from the
# Debian archive and imported into the engine. It is not the Docker Official Image: Python
# lives in /usr/bin instead of /usr/local/bin, and it is labelled org.tlstm.stand-in=true.
# The Dockerfiles only rely on `python3`, `python3 -m venv`, useradd/groupadd and /bin/sh, so
# they build on either unchanged. The root file system is kept as a tarball under
# docker/.build/ and reused, so a wiped engine re-imports it in seconds.
#
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${1:-python:3.11-slim}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
build=docker/.build
tarball=$build/stand-in-bookworm-python3.tar
packages=python3,python3-venv,ca-certificates

[[ $(id -u) -eq 0 ]] || { echo "stand-in-base.sh: debootstrap needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "stand-in-base.sh: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
mkdir -p "$build"

if [[ ! -s $tarball ]]; then
    rootfs=$(mktemp -d "$build/rootfs.XXXXXX")
    trap 'rm -rf "$rootfs"' EXIT
    echo "stand-in-base.sh: debootstrap bookworm ($packages) from $mirror" >&2
    debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror" \
        > "$build/debootstrap.log" 2>&1 \
        || { tail -n 20 "$build/debootstrap.log" >&2; exit 1; }
    # What the official slim image also leaves out: package caches, documentation.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
           "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
    ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
    tar --numeric-owner -C "$rootfs" -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
fi

docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'LABEL org.tlstm.stand-in=true org.tlstm.stand-in.source="debootstrap bookworm minbase + python3 python3-venv"' \
    --change 'CMD ["python3"]' \
    "$tarball" "$tag" >/dev/null
echo "stand-in-base.sh: tagged $tag ($(docker run --rm "$tag" python3 --version))" >&2
