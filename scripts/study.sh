#!/usr/bin/env bash
# The measured study behind docs/results.md and the README's findings: campaigns of every method
# on the AMi-Br test split with the bundled weights, both directions, the paper's confidence
# filter and no filter; then analysis, the detector, certificates and the guard table with the
# certified ensemble. Two streams run side by side (one per core). A killed study resumes when
# rerun with the same OUT (every campaign resumes). Then:
#   .venv/bin/python scripts/study_results.py OUT     # -> benchmarks/results/study*.json
# Usage: bash scripts/study.sh [OUT=runs/study]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/study}"
export OMP_NUM_THREADS=1 ONEPIXEL_DATA="${ONEPIXEL_DATA:-$(cd .. && pwd)/shared/data/ami-br}"
op() { .venv/bin/onepixel "$@" --no-progress; }
N1=40   # images per k = 1 campaign
N35=20  # images per k = 3 / 5 campaign
BUDGET=10000  # Sparse-RS queries per image
mkdir -p "$OUT"
stream() {  # one direction: every method, filter and no filter
  local dir=$1
  for filt in filter nofilter; do
    local f=(); [ "$filt" = nofilter ] && f=(--no-filter)
    op attack --direction "$dir" "${f[@]}" --limit $N1 --out "$OUT/de-k1-$filt-$dir"
    op attack --direction "$dir" "${f[@]}" --method exhaustive --limit $N1 --out "$OUT/exhaustive-k1-$filt-$dir"
    op attack --direction "$dir" "${f[@]}" --method sparse-rs --budget $BUDGET --limit $N1 --out "$OUT/sparse-rs-k1-$filt-$dir"
    for k in 3 5; do
      op attack --direction "$dir" "${f[@]}" -k $k --maxiter 50 --limit $N35 --out "$OUT/de-k$k-$filt-$dir"
      op attack --direction "$dir" "${f[@]}" -k $k --method sparse-rs --budget $BUDGET --limit $N35 --out "$OUT/sparse-rs-k$k-$filt-$dir"
    done
  done
  op attack --direction "$dir" --objective colour --limit 6 --out "$OUT/colour-k1-filter-$dir"
}
stream lower > "$OUT/stream-lower.log" 2>&1 &
stream raise > "$OUT/stream-raise.log" 2>&1 &
wait
RUNS=("$OUT"/de-k1-* "$OUT"/exhaustive-k1-* "$OUT"/sparse-rs-k*-*)
# every method and the colour runs; then DE alone, whose pixel order is not a scan (the parity
# test is meaningful only there: exhaustive and Sparse-RS try even-even pixels first)
.venv/bin/onepixel run analyze "${RUNS[@]}" "$OUT"/colour-* --json --no-figures > "$OUT/analysis.json"
.venv/bin/onepixel run analyze "$OUT"/de-k* --json --no-figures > "$OUT/analysis-de.json"
op certify --out "$OUT/certify" --json > "$OUT/certify.json"
.venv/bin/onepixel detector evaluate "$OUT"/de-k1-nofilter-* "$OUT"/exhaustive-k1-nofilter-* --out "$OUT/detector" --json > "$OUT/detector.json"
.venv/bin/onepixel guard evaluate "${RUNS[@]}" --certified certified --out "$OUT/guard.json" > "$OUT/guard.log" 2>&1
echo "study done: $OUT"
