#!/usr/bin/env bash
# Set up a virtualenv on a fresh machine and run the test suite against the real data.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
# torch is pinned to the CPU wheel; a looser spec would pull GBs of CUDA packages.
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0 -e '.[dev,ray,defense]'
# Peers for the benchmark adapters' tests; --no-deps because torchattacks lists torchvision.
.venv/bin/pip install -q --disable-pip-version-check --no-deps torchattacks adversarial-robustness-toolbox six tqdm
# The HTML report test drives a real headless Chromium.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "warning: could not install chromium"
  else
    echo "warning: chromium missing; the browser test will fail"
  fi
fi
export ONEPIXEL_DATA="${ONEPIXEL_DATA:-$(cd .. && pwd)/shared/data/ami-br}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
