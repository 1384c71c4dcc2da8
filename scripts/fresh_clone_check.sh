#!/usr/bin/env bash
# Rehearse a new user's first minutes: clone HEAD into a temporary folder with ../shared beside
# it, then run the README's two commands (the first code block: demo, then tests) exactly as
# written, printing the wall time of each. Exits non-zero when either command fails.
# Usage: bash scripts/fresh_clone_check.sh [--keep]   (--keep leaves the clone for a look)
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="$(cd "$REPO/.." && pwd)/shared"
[ -d "$SHARED" ] || { echo "error: $SHARED not found (the clone needs ../shared beside it)" >&2; exit 1; }
WORK="$(mktemp -d /tmp/onepixel-fresh.XXXXXX)"
[ "${1:-}" = --keep ] || trap 'rm -rf "$WORK"' EXIT
git clone -q "$REPO" "$WORK/main"
ln -s "$SHARED" "$WORK/shared"
cd "$WORK/main"
echo "fresh clone of $(git rev-parse --short HEAD) at $WORK/main, ../shared -> $SHARED"
# The README's first fenced block holds the two commands.
mapfile -t COMMANDS < <(awk '/^```/{n++; next} n==1' README.md)
[ "${#COMMANDS[@]}" -eq 2 ] || { echo "error: README's first code block must hold 2 commands" >&2; exit 1; }
status=0
for i in 0 1; do
  cmd="${COMMANDS[$i]}"
  echo "=== command $((i + 1)): $cmd"
  start=$(date +%s)
  set +e
  bash -c "$cmd" > "$WORK/command$((i + 1)).log" 2>&1
  rc=$?
  set -e
  secs=$(( $(date +%s) - start ))
  if [ "$rc" -eq 0 ]; then tail -n 5 "$WORK/command$((i + 1)).log"; else tail -n 60 "$WORK/command$((i + 1)).log"; fi
  echo "=== command $((i + 1)) exited $rc after $((secs / 60)) min $((secs % 60)) s"
  [ "$rc" -eq 0 ] || status=1
done
exit "$status"
