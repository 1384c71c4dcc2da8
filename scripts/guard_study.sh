#!/bin/bash
# The guard study (docs/results.md, "Guard study"): DE campaigns on the borderline test patches,
# the exhaustive k = 1 worst case through each guard, the site study, the guard table and the
# trade-off, one step after another on one core; then one result JSON with provenance.
#
#   bash scripts/guard_study.sh OUT [CAMPAIGN_IMAGES] [WORST_CASE_IMAGES]  > OUT.log
# (env: ONEPIXEL_DATA, PYTHON, ONEPIXEL for the interpreter and console script, FIGURE for the
# trade-off PNG, default docs/figures/guard_tradeoff.png)
#
# Every step prints "=== NAME start", "+ COMMAND" and "=== NAME done rc=R S s" (the results
# script reads the wall times and commands from that log).
set -u
OUT=${1:?usage: guard_study.sh OUT [CAMPAIGN_IMAGES] [WORST_CASE_IMAGES]}
N=${2:-40}
W=${3:-20}
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
D=${ONEPIXEL_DATA:-../shared/data/ami-br}
PY=${PYTHON:-.venv/bin/python}
OP=${ONEPIXEL:-.venv/bin/onepixel}
step() {
  local name=$1 t0
  shift
  t0=$(date +%s)
  echo "=== $name start $(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg)"
  echo "+ $*"
  "$@"
  echo "=== $name done rc=$? $(($(date +%s) - t0)) s"
}
for c in plain-k1 plain-k3 adaptive-residual adaptive-robust adaptive-both through-median \
  adaptive-vae through-repair1 through-repair3; do
  step "camp-$c" "$PY" scripts/guard_attacks.py --data "$D" --limit "$N" --only "$c" --out "$OUT/de40"
done
for d in lower raise; do
  step "worst-$d" "$PY" scripts/guard_worst_case.py --data "$D" --direction "$d" --limit "$W" \
    --out "$OUT/worst-$d.json"
done
step site "$PY" scripts/guard_site_study.py --data "$D" --out "$OUT/site_study.json"
step calib-vae "$OP" guard calibrate --data "$D" --split train --fpr 0.05 --detector vae \
  --out "$OUT/guard_vae.json"
step evaluate "$OP" guard evaluate "$OUT"/de40/* --data "$D" --detector "$OUT/guard_vae.json" \
  --worst-case "$OUT/worst-lower.json" --worst-case "$OUT/worst-raise.json" \
  --site-study "$OUT/site_study.json" --out "$OUT/guard_table.json"
step tradeoff "$PY" scripts/guard_tradeoff.py --data "$D" \
  --worst-case "$OUT/worst-lower.json" "$OUT/worst-raise.json" \
  --png "${FIGURE:-docs/figures/guard_tradeoff.png}" --out "$OUT/tradeoff.json"
echo "then: $PY scripts/guard_study_results.py $OUT --log LOG --runner scripts/guard_study.sh"
