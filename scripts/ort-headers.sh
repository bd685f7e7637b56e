#!/usr/bin/env bash
# ONNX Runtime's C API headers, which the fused-kernel library (tlstm/ort_ops) is compiled
# against. The onnxruntime wheel ships none; Debian packages them in libonnxruntime-dev.
# The package is fetched from Debian's archive with a private apt configuration under DEST
# (the machine's own sources and lists are not touched) and only its headers are unpacked.
# The C API is stable: a library built against these headers runs on every later runtime.
#
#   bash scripts/ort-headers.sh DEST     # -> DEST/include/onnxruntime_c_api.h, ...
set -euo pipefail
dest=${1:?usage: ort-headers.sh DEST}
suite=${TLSTM_ORT_HEADERS_SUITE:-trixie}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
if [ -f "$dest/include/onnxruntime_c_api.h" ]; then
    exit 0
fi
command -v apt-get > /dev/null || { echo "ort-headers.sh: needs apt-get (Debian or Ubuntu)" >&2; exit 1; }
work=$(mktemp -d "$dest/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
echo "deb [signed-by=$keyring] http://deb.debian.org/debian $suite main" > "$work/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Sandbox::User=root)
apt-get "${apt_opts[@]}" -qq update
(cd "$work" && apt-get "${apt_opts[@]}" -qq download libonnxruntime-dev)
dpkg-deb -x "$work"/libonnxruntime-dev_*.deb "$work/unpacked"
mkdir -p "$work/include"
cp "$work"/unpacked/usr/include/onnxruntime/*.h "$work/include/"
cp "$work"/unpacked/usr/share/doc/libonnxruntime-dev/copyright "$work/include/COPYRIGHT" 2>/dev/null || true
rm -rf "$dest/include"
mv "$work/include" "$dest/include"
