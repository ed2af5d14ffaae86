#!/usr/bin/env bash
# Compile-checks the TensorRT shim (src/trt/shim.cpp) against real TensorRT headers taken
# from package registries only, no TensorRT install needed:
#   * TensorRT headers: the crates.io crate `trtx-sys` bundles NVIDIA's (Apache-2.0)
#     headers under TensorRT-Headers/TRT-Enterprise-<version>/: 0.5.0 carries 10.16,
#     0.9.1+rtx1.7 carries 11.4. Downloaded from crates.io, checked against the sha256
#     the crates.io index lists for them.
#   * CUDA runtime headers (NvInfer.h includes cuda_runtime_api.h): the PyPI wheels
#     nvidia-cuda-runtime-cu12 (include/) and nvidia-cuda-nvcc-cu12 (include/crt/).
# Nothing is installed; everything lands in .trt-headers/ (ignored by git) and is reused.
# Usage: scripts/check_trt_headers.sh      (exit status 0 when every version compiles)
set -euo pipefail
cd "$(dirname "$0")/.."
cache=.trt-headers
mkdir -p "$cache"
CXX="${CXX:-g++}"

# version  crate-version  sha256 (from the crates.io index)
versions=(
  "10.16 0.5.0 1efd9036abbd2775da5df4e49793ec8e656f026fb9c60dff7e95bda2d654e634"
  "11.4 0.9.1+rtx1.7 5480ee056292951daa1bc74532162d6cb75190f091e45d7d97c0c356916ae171"
)

fetch_crate() { # crate-version sha256 -> path of the unpacked headers of that crate
  local v="$1" sum="$2" f="$cache/trtx-sys-$1.crate"
  if [ ! -s "$f" ]; then
    curl -sSfL --retry 3 -o "$f.tmp" "https://static.crates.io/crates/trtx-sys/trtx-sys-${v/+/%2B}.crate"
    mv "$f.tmp" "$f"
  fi
  if ! echo "$sum  $f" | sha256sum -c --quiet - >/dev/null 2>&1; then
    echo "check_trt_headers: $f does not match the crates.io checksum $sum" >&2
    rm -f "$f"
    exit 1
  fi
  if [ ! -d "$cache/trtx-sys-$v" ]; then
    mkdir -p "$cache/x.tmp"
    tar xzf "$f" -C "$cache/x.tmp" "trtx-sys-$v/TensorRT-Headers"
    mv "$cache/x.tmp/trtx-sys-$v" "$cache/trtx-sys-$v"
    rm -rf "$cache/x.tmp"
  fi
}

cuda_inc="$cache/cuda"
if [ ! -f "$cuda_inc/nvidia/cuda_runtime/include/cuda_runtime_api.h" ] ||
  [ ! -f "$cuda_inc/nvidia/cuda_nvcc/include/crt/host_defines.h" ]; then
  command -v python3 >/dev/null || { echo "check_trt_headers: python3 with pip is needed for the CUDA header wheels" >&2; exit 1; }
  rm -rf "$cache/wheels" "$cuda_inc"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$cache/wheels" \
    "nvidia-cuda-runtime-cu12==12.9.79" "nvidia-cuda-nvcc-cu12==12.9.86"
  python3 - "$cache/wheels" "$cuda_inc" <<'PY'
import pathlib, sys, zipfile
src, out = pathlib.Path(sys.argv[1]), sys.argv[2]
for whl in src.glob("*.whl"):
    with zipfile.ZipFile(whl) as z:
        for n in z.namelist():
            if n.startswith(("nvidia/cuda_runtime/include/", "nvidia/cuda_nvcc/include/crt/")):
                z.extract(n, out)
PY
  rm -rf "$cache/wheels"
fi

status=0
for entry in "${versions[@]}"; do
  read -r trt crate sum <<<"$entry"
  fetch_crate "$crate" "$sum"
  inc="$cache/trtx-sys-$crate/TensorRT-Headers/TRT-Enterprise-$trt"
  got=$(sed -n 's/^#define TRT_\(MAJOR\|MINOR\)_ENTERPRISE \([0-9]*\).*/\2/p' "$inc/NvInferVersion.h" | paste -sd.)
  # deprecation warnings are expected: the shim keeps TensorRT 8.5's API where 10.x still has it
  if "$CXX" -std=c++17 -fsyntax-only -Wall -Wextra -Werror -Wno-deprecated-declarations \
    -isystem "$inc" -isystem "$cuda_inc/nvidia/cuda_runtime/include" -isystem "$cuda_inc/nvidia/cuda_nvcc/include" \
    src/trt/shim.cpp; then
    echo "check_trt_headers: src/trt/shim.cpp compiles against TensorRT $got headers (trtx-sys $crate)"
  else
    echo "check_trt_headers: src/trt/shim.cpp does NOT compile against TensorRT $got headers (trtx-sys $crate)" >&2
    status=1
  fi
done
exit $status
