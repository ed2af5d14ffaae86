#!/usr/bin/env bash
# Real-size parity (not in CI): for each official config, generate seeded random-weight
# golden fixtures with the official sam2==1.1.0 code (tests/fixtures/gen/gen_sam2.py),
# then export with tamrt and compare every graph on ONNX Runtime (`tamrt parity`).
# Needs the generator's venv (see tests/fixtures/gen/README.md) as $PYTHON.
# Usage: PYTHON=.venv/bin/python scripts/parity_real.sh [WORKDIR] [MODEL ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
work="${1:-/tmp/tamrt-parity-real}"
shift || true
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(sam2_hiera_t sam2_hiera_s sam2_hiera_b+ sam2_hiera_l sam2.1_hiera_t sam2.1_hiera_s sam2.1_hiera_b+ sam2.1_hiera_l)
cargo build --release -q
mkdir -p "$work"
for m in "${models[@]}"; do
  echo "== $m"
  "$PYTHON" tests/fixtures/gen/gen_sam2.py --model "$m" --out "$work/$m" --no-checkpoint-safetensors >"$work/$m.gen.log" 2>&1
  ./target/release/tamrt parity --fixtures "$work/$m" --out "$work/$m.export" > "$work/$m.parity.txt" 2>&1 || echo "   (over tolerance, see $work/$m.parity.txt)"
  grep "=>" "$work/$m.parity.txt"
  rm -rf "$work/$m" "$work/$m.export"
done
