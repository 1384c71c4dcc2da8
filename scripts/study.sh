#!/usr/bin/env bash
# The measured study behind the closing notes and docs/results.md: campaigns of every kind on the
# AMi-Br test split with the bundled model. Two streams run side by side (one per core).
# Usage: bash scripts/study.sh [OUT=runs/study]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/study}"
export OMP_NUM_THREADS=1 ONEPIXEL_DATA="${ONEPIXEL_DATA:-$(cd .. && pwd)/shared/data/ami-br}"
op() { .venv/bin/onepixel "$@" --no-progress; }
mkdir -p "$OUT"
(
  op attack --direction lower --limit 40 --out "$OUT/plain-lower"           # the paper's campaign
  op attack --direction raise --limit 40 --out "$OUT/plain-raise"
  op attack --direction lower -k 3 --limit 15 --maxiter 50 --out "$OUT/k3-lower"
  op attack --direction lower -k 5 --limit 15 --maxiter 50 --out "$OUT/k5-lower"
) > "$OUT/stream-a.log" 2>&1 &
(
  op attack --direction lower --no-filter --limit 40 --maxiter 30 --out "$OUT/nofilter-lower"
  op attack --direction raise --no-filter --limit 40 --maxiter 30 --out "$OUT/nofilter-raise"
  op attack --direction lower --objective colour --limit 6 --out "$OUT/colour-lower"
  op attack --direction raise --objective colour --limit 6 --out "$OUT/colour-raise"
  op attack --direction raise -k 3 --limit 15 --maxiter 50 --out "$OUT/k3-raise"
  op attack --direction raise -k 5 --limit 15 --maxiter 50 --out "$OUT/k5-raise"
) > "$OUT/stream-b.log" 2>&1 &
wait
# The paper's tolerance stops most attacks on this model right after the initial population;
# with the convergence test off the search runs its generations and shows where flips appear.
(
  op attack --direction lower --no-convergence --maxiter 30 --limit 15 --out "$OUT/noconv-k1-lower"
  op attack --direction lower -k 3 --no-convergence --maxiter 30 --limit 15 --out "$OUT/noconv-k3-lower"
  op attack --direction lower -k 5 --no-convergence --maxiter 30 --limit 15 --out "$OUT/noconv-k5-lower"
) > "$OUT/stream-c.log" 2>&1 &
(
  op attack --direction raise --no-convergence --maxiter 30 --limit 15 --out "$OUT/noconv-k1-raise"
  op attack --direction raise -k 3 --no-convergence --maxiter 30 --limit 15 --out "$OUT/noconv-k3-raise"
  op attack --direction raise -k 5 --no-convergence --maxiter 30 --limit 15 --out "$OUT/noconv-k5-raise"
) > "$OUT/stream-d.log" 2>&1 &
wait
# Successful attacks for the detector study: every Atypical test image, whatever its score.
op attack --direction lower --no-filter --maxiter 30 --out "$OUT/nofilter-lower-all" > "$OUT/stream-e.log" 2>&1
echo "campaigns done: $OUT"
