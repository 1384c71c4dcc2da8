#!/usr/bin/env bash
# Set up a virtualenv on a fresh machine and run the test suite against the real data.
# Usage: bash scripts/test.sh [pytest args...]
#
# Installs, saying so as it goes (and stopping with an error when any step fails):
#   1. .venv with torch==2.13.0 and onepixel plus its dev, ray, defense and foreign extras;
#   2. the benchmark peers torchattacks and ART (--no-deps: torchattacks lists torchvision);
#   3. Debian's chromium for the browser tests (when missing and run as root).
# torch: `pip install torch==2.13.0` takes the CPU wheel where pip finds one (this project's
# machines have it on disk). On a stock machine, point pip at the PyTorch CPU wheel index first:
# TORCH_INDEX_URL=<the CPU index URL from PyTorch's install selector> bash scripts/test.sh
# (any looser torch requirement pulls a CUDA build of several GB).
# Under CI=true every skipped test fails the suite (tests/conftest.py): nothing hides as a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[test.sh] %s\n' "$*" >&2; }
die() { printf '[test.sh] error: %s\n' "$*" >&2; exit 1; }
PIP=(.venv/bin/pip install -q --disable-pip-version-check)

if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $(python3 --version 2>&1)"
  python3 -m venv .venv || die "python3 -m venv failed (install python3-venv)"
fi
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  say "installing torch==2.13.0 from $TORCH_INDEX_URL"
  "${PIP[@]}" --index-url "$TORCH_INDEX_URL" torch==2.13.0 || die "could not install torch==2.13.0"
fi
say "installing torch==2.13.0 and onepixel[dev,ray,defense,foreign] (editable)"
"${PIP[@]}" torch==2.13.0 -e '.[dev,ray,defense,foreign]' \
  || die "pip could not install torch==2.13.0 / onepixel's extras (see above; TORCH_INDEX_URL helps on a stock machine)"
say "installing the benchmark peers torchattacks, adversarial-robustness-toolbox (--no-deps)"
"${PIP[@]}" --no-deps torchattacks adversarial-robustness-toolbox six tqdm \
  || die "could not install the benchmark peers"

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    say "installing Debian's chromium for the browser tests"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
      || die "apt-get could not install chromium (the browser tests need it)"
  elif [ "${CI:-}" = true ]; then
    die "chromium is missing and this user cannot install it (CI never skips the browser tests)"
  else
    say "warning: chromium is missing; the browser tests will be skipped (install Debian's chromium)"
  fi
fi

export ONEPIXEL_DATA="${ONEPIXEL_DATA:-$(cd .. && pwd)/shared/data/ami-br}"
[ -d "$ONEPIXEL_DATA" ] || die "no data at $ONEPIXEL_DATA (put ../shared beside the checkout or set ONEPIXEL_DATA)"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
say "running pytest on $ONEPIXEL_DATA (CI=${CI:-unset})"
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
