#!/usr/bin/env bash
# Download on the host every wheel that one image needs, for builds that reach no index.
#
# usage: docker/wheelhouse.sh FLAVOUR [PYTHON_VERSION]
#   FLAVOUR         cpu    serving image, onnxruntime        (docker/Dockerfile)
#                   gpu    serving image, onnxruntime-gpu    (docker/Dockerfile.gpu)
#                   train  training image, torch + onnxruntime (docker/Dockerfile.train)
#   PYTHON_VERSION  the image's interpreter, default 3.11 (python:3.11-slim); the CUDA base
#                   of Dockerfile.gpu (Ubuntu 24.04) has 3.12.
#
# Prints the wheelhouse's path relative to the repository root (the build context), to pass as
# `--build-arg WHEELHOUSE=...`. A wheelhouse whose requirements, pins and Python version have not
# changed is reused. Wheels are binary-only and for manylinux x86_64, so the host's own Python
# version does not matter.
#
# Environment: PYTHON (interpreter that runs pip; default python3), ORT_GPU_VERSION (pin for
# the gpu flavour, default 1.31.1: CUDA 13 + cuDNN 9 builds, matching Dockerfile.gpu's base),
# TORCH_VERSION (pin for the train flavour, default 2.13.0). The CPU build of torch is taken from
# pip's configured find-links/indexes when one of them has it (a plain PyPI `torch` is the
# multi-GB CUDA build), else from TORCH_INDEX_URL (default https://download.pytorch.org/whl/cpu).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '3,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
flavour=$1
pyver=${2:-3.11}
py=${PYTHON:-python3}
pins=()
case $flavour in
    cpu) extras=(cpu) ;;
    gpu) extras=(gpu); pins=("onnxruntime-gpu==${ORT_GPU_VERSION:-1.31.1}") ;;
    train) extras=(cpu train); pins=("torch==${TORCH_VERSION:-2.13.0}") ;;
    *) echo "wheelhouse.sh: unknown flavour '$flavour'; expected cpu, gpu or train" >&2; usage ;;
esac
[[ $pyver =~ ^3\.[0-9]+$ ]] || { echo "wheelhouse.sh: PYTHON_VERSION must look like 3.11, got '$pyver'" >&2; exit 2; }

requirements=$("$py" docker/requirements.py pyproject.toml "${extras[@]}")
build_requirements=$("$py" docker/requirements.py pyproject.toml --build-system)
platforms=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
           manylinux_2_5_x86_64 manylinux1_x86_64)
out=docker/.build/wheelhouse/$flavour-py$pyver
key=$(printf '%s\n' "$requirements" "$build_requirements" "${pins[@]}" "$pyver" "${platforms[@]}" \
      | sha256sum | cut -c1-16)
if [[ -f $out/.key && $(cat "$out/.key") == "$key" ]]; then
    echo "wheelhouse.sh: $out is up to date" >&2
    echo "$out"
    exit 0
fi

partial=$out.partial
rm -rf "$partial"
mkdir -p "$partial"
printf '%s\n' "$requirements" "$build_requirements" > "$partial/requirements.txt"
printf '%s\n' "${pins[@]}" > "$partial/constraints.txt"
target=(--disable-pip-version-check --quiet --only-binary=:all: --implementation cp
        --python-version "$pyver")
for p in "${platforms[@]}"; do target+=(--platform "$p"); done
echo "wheelhouse.sh: downloading the $flavour wheels for CPython $pyver into $out" >&2
if [[ $flavour == train ]]; then
    # The CPU build first, alone; then pinned exactly so the resolver cannot take PyPI's CUDA one.
    torch_pin=${pins[0]}
    if ! "$py" -m pip download "${target[@]}" --no-deps --no-index --dest "$partial" "$torch_pin+cpu" >&2; then
        "$py" -m pip download "${target[@]}" --no-deps --retries 1 --timeout 30 \
            --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}" \
            --dest "$partial" "$torch_pin+cpu" >&2
    fi
    printf '%s\n' "$torch_pin+cpu" > "$partial/constraints.txt"
fi
"$py" -m pip download "${target[@]}" --find-links "$partial" \
    -r "$partial/requirements.txt" -c "$partial/constraints.txt" --dest "$partial" >&2
echo "$key" > "$partial/.key"
rm -rf "$out"
mv "$partial" "$out"
echo "wheelhouse.sh: $(find "$out" -name '*.whl' | wc -l) wheels, $(du -sh "$out" | cut -f1)" >&2
echo "$out"
