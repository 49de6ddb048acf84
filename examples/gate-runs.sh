#!/usr/bin/env bash
# Gate a list of planned runs before anyone books a GPU: exit 1 if any run does not fit.
#
#   examples/gate-runs.sh [RUN_FILE...]      (default: every YAML under examples/runs/)
#
# Each run file holds one run or a list (see examples/runs/planned.yaml). Markdown goes to
# $GITHUB_STEP_SUMMARY when set (a pull request's job summary), else to stdout.
# Set VRAMCALC to the command to run (default: vramcalc on PATH).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
vramcalc="${VRAMCALC:-vramcalc}"
summary="${GITHUB_STEP_SUMMARY:-/dev/stdout}"
# Custom presets used by the run files (my-7b, a 20 GB budget card): see examples/presets/.
export VRAMCALC_PRESETS="${VRAMCALC_PRESETS:-$here/presets}"

if [ "$#" -eq 0 ]; then
  set -- "$here"/runs/*.yaml
fi

failed=0
for run_file in "$@"; do
  echo "## $(basename "$run_file")" >>"$summary"
  # --check: exit 1 when a run does not fit; 2 is bad input (a one-line error on stderr).
  if $vramcalc estimate --config "$run_file" --check --format markdown >>"$summary"; then
    echo "ok      $run_file"
  else
    status=$?
    [ "$status" -eq 1 ] || exit "$status"
    echo "too big $run_file"
    failed=1
  fi
done
exit "$failed"
