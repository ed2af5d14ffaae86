#!/usr/bin/env bash
# The whole pipeline on a fresh machine, no download but the ONNX Runtime wheel:
#   setup (ONNX Runtime into .ort/) -> build -> a synthetic SA-V-layout dataset (moving
#   shapes with ground-truth masks) -> export a model with seeded random weights ->
#   `tamrt bench` (warm-up, per-stage timing, memory, J&F, summary + plots).
# Random weights make the masks and J&F meaningless; the timings and the harness are real.
#
# Usage: scripts/demo.sh
# Env:   MODELS (default edgetam; comma-separated `tamrt config --list` names, e.g.
#        sam2.1_hiera_t,edgetam to compare them), VIDEOS (2),
#        FRAMES (3), SIZE (160x120), OUT (target/demo), BACKEND (auto), THREADS (0 = ORT default)
# Output: OUT/bench.jsonl, OUT/bench.summary.{md,csv}, OUT/bench.{stages,jf}.svg.
# Rerunning resumes (finished videos are skipped); delete OUT to start over.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS="${MODELS:-edgetam}"
VIDEOS="${VIDEOS:-2}"
FRAMES="${FRAMES:-3}"
SIZE="${SIZE:-160x120}"
OUT="${OUT:-target/demo}"
BACKEND="${BACKEND:-auto}"
THREADS="${THREADS:-0}"

scripts/setup.sh
cargo build --release --quiet
bin=target/release/tamrt
mkdir -p "$OUT"
"$bin" bench make-dataset --out "$OUT/dataset" --videos "$VIDEOS" --frames "$FRAMES" --size "$SIZE"
for m in ${MODELS//,/ }; do
  if [ ! -f "$OUT/models/$m/model.json" ]; then
    "$bin" export --model "$m" --random-weights 0 --out "$OUT/models/$m"
  fi
done
"$bin" bench --dataset "$OUT/dataset" --models "$MODELS" --models-root "$OUT/models" \
  --out "$OUT/bench.jsonl" --backend "$BACKEND" --threads "$THREADS" --warmup 1
