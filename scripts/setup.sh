#!/usr/bin/env bash
# Installs what tamrt needs at run time that cargo does not bring: the ONNX Runtime shared
# library, taken from the PyPI `onnxruntime` wheel (which ships libonnxruntime.so.1.x) and
# unpacked into .ort/ at the repo root. Nothing is downloaded from any CDN.
# Usage: scripts/setup.sh            (idempotent; ORT_VERSION overrides the version)
set -euo pipefail
cd "$(dirname "$0")/.."
ORT_VERSION="${ORT_VERSION:-1.32.0}"
if ls .ort/libonnxruntime.so.* >/dev/null 2>&1; then
  echo "setup: ONNX Runtime already in .ort/ ($(ls .ort | tr '\n' ' '))"
  exit 0
fi
command -v python3 >/dev/null || { echo "setup: python3 with pip is needed to fetch the onnxruntime wheel" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: "onnxruntime==${ORT_VERSION}" -d "$tmp"
wheel=$(ls "$tmp"/onnxruntime-*.whl)
mkdir -p "$tmp/x" .ort.tmp
python3 - "$wheel" "$tmp/x" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for n in z.namelist():
        if n.startswith("onnxruntime/capi/libonnxruntime"):
            z.extract(n, sys.argv[2])
PY
cp "$tmp"/x/onnxruntime/capi/libonnxruntime* .ort.tmp/
rm -rf .ort && mv .ort.tmp .ort
echo "setup: installed $(ls .ort | tr '\n' ' ')into .ort/"
