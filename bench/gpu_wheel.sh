#!/usr/bin/env bash
# Bring wheels to a GPU machine that cannot reach a package index, in parts of at most 55 MB.
#
#   bench/gpu_wheel.sh fetch [DIR]          download onnxruntime-gpu 1.31.1 (cp312, manylinux_2_28)
#                                           and pytest's wheels for Python 3.12 into DIR
#   bench/gpu_wheel.sh split WHEEL... [--into DIR]
#                                           cut each wheel into DIR/parts/NAME.part-NN (<= 55 MB
#                                           each); DIR/SHA256SUMS records every whole wheel
#   bench/gpu_wheel.sh join TARGET [DIR]    on the other side: put the parts together, check the
#                                           sums, install each wheel with
#                                           `pip install --no-deps --target TARGET`
#                                           (or unpack it when pip is missing)
#   bench/gpu_wheel.sh small TARGET [DIR]   install the small wheels (DIR/small/*.whl) likewise
#   bench/gpu_wheel.sh install-once TARGET [DIR]
#                                           join, unless TARGET already holds the wheels that
#                                           DIR/SHA256SUMS names (a rerun on the same machine)
#
# DIR defaults to .gpu-wheel/ at the repository root. It ignores itself (a .gitignore of "*"), so
# the parts never enter git and travel only where a command names them. Wheels small enough to
# travel whole (pytest and its dependencies) are kept as they are, under DIR/small/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PART_BYTES=${GPU_WHEEL_PART_BYTES:-55000000}
PY="${PYTHON:-python3}"
ORT_GPU="onnxruntime-gpu==1.31.1"
SMALL=(pytest)  # pulls pluggy, iniconfig, packaging (pure Python)

usage() { sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }

ensure_dir() {
    mkdir -p "$1/parts" "$1/small"
    printf '*\n' > "$1/.gitignore"
}

fetch() {
    local dir="${1:-$ROOT/.gpu-wheel}"
    ensure_dir "$dir"
    local tags=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312
                --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64)
    "$PY" -m pip download --no-deps "${tags[@]}" -d "$dir/whole" "$ORT_GPU"
    "$PY" -m pip download "${tags[@]}" --platform any -d "$dir/small" "${SMALL[@]}"
    ls -l "$dir/whole" "$dir/small"
}

split_wheels() {
    local dir="$ROOT/.gpu-wheel" wheels=()
    while (($#)); do
        case "$1" in
            --into) dir="$2"; shift 2 ;;
            *) wheels+=("$1"); shift ;;
        esac
    done
    ((${#wheels[@]})) || usage
    ensure_dir "$dir"
    for wheel in "${wheels[@]}"; do
        local name
        name="$(basename "$wheel")"
        [[ "$name" == *.whl ]] || { echo "gpu_wheel.sh: $wheel: expected a .whl file" >&2; exit 2; }
        rm -f "$dir/parts/$name".part-*
        split -b "$PART_BYTES" -d -a 2 "$wheel" "$dir/parts/$name.part-"
        (cd "$(dirname "$wheel")" && sha256sum "$name") > "$dir/parts/$name.sha256"
        echo "$name: $(ls "$dir/parts/$name".part-* | wc -l) parts of <= $PART_BYTES bytes"
    done
    cat "$dir"/parts/*.sha256 > "$dir/SHA256SUMS"
    ls -l "$dir/parts"
}

install_wheel() {  # WHEEL TARGET
    if "$PY" -m pip --version >/dev/null 2>&1; then
        "$PY" -m pip install --quiet --no-deps --no-compile --target "$2" "$1"
    else  # a wheel is a zip whose top level is the install layout
        "$PY" -m zipfile -e "$1" "$2"
    fi
}

join_wheels() {
    local target="${1:?join needs a TARGET directory}" dir="${2:-$ROOT/.gpu-wheel}"
    local work="$dir/joined"
    mkdir -p "$work" "$target"
    shopt -s nullglob
    local first_parts=("$dir"/parts/*.part-00)
    shopt -u nullglob
    ((${#first_parts[@]})) || { echo "gpu_wheel.sh: no parts under $dir/parts" >&2; exit 1; }
    for first in "${first_parts[@]}"; do
        local name
        name="$(basename "${first%.part-00}")"
        cat "$dir/parts/$name".part-* > "$work/$name"
        (cd "$work" && sha256sum --check --status "$dir/parts/$name.sha256") \
            || { echo "gpu_wheel.sh: $name: checksum mismatch (a part is missing or damaged)" >&2; exit 1; }
        echo "joined $name ($(stat -c %s "$work/$name") bytes, sha256 ok)"
        install_wheel "$work/$name" "$target"
        rm -f "$work/$name"
    done
    echo "installed into $target"
}

install_once() {
    local target="${1:?install-once needs a TARGET directory}" dir="${2:-$ROOT/.gpu-wheel}"
    [[ -f "$dir/SHA256SUMS" ]] || { echo "gpu_wheel.sh: no $dir/SHA256SUMS: bring the parts first" >&2; exit 1; }
    if [[ -f "$target/.joined" ]] && cmp -s "$target/.joined" "$dir/SHA256SUMS"; then
        echo "$target already holds the wheels of $dir/SHA256SUMS"
        return 0
    fi
    rm -rf "$target"
    join_wheels "$target" "$dir"
    cp "$dir/SHA256SUMS" "$target/.joined"
}

small_wheels() {
    local target="${1:?small needs a TARGET directory}" dir="${2:-$ROOT/.gpu-wheel}"
    shopt -s nullglob
    local wheels=("$dir"/small/*.whl)
    shopt -u nullglob
    ((${#wheels[@]})) || { echo "gpu_wheel.sh: no wheels under $dir/small" >&2; exit 1; }
    mkdir -p "$target"
    for wheel in "${wheels[@]}"; do
        install_wheel "$wheel" "$target"
    done
    echo "installed ${#wheels[@]} wheels into $target"
}

case "${1:-}" in
    fetch) shift; fetch "$@" ;;
    split) shift; split_wheels "$@" ;;
    join) shift; join_wheels "$@" ;;
    small) shift; small_wheels "$@" ;;
    install-once) shift; install_once "$@" ;;
    *) usage ;;
esac
