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
# The markdown goes to fd 3: the job summary, else this script's own stdout. (Reopening /dev/stdout with
# >> made `gate-runs.sh > file` overwrite its own output: two descriptions of one file, different offsets.)
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
  exec 3>>"$GITHUB_STEP_SUMMARY"
else
  exec 3>&1
fi
# Custom presets used by the run files (my-7b, a 20 GB budget card): see examples/presets/.
export VRAMCALC_PRESETS="${VRAMCALC_PRESETS:-$here/presets}"

if [ "$#" -eq 0 ]; then
  set -- "$here"/runs/*.yaml
fi

failed=0
for run_file in "$@"; do
  echo "## $(basename "$run_file")" >&3
  # --check: exit 1 when a run does not fit; 2 is bad input (a one-line error on stderr).
  if $vramcalc estimate --config "$run_file" --check --format markdown >&3; then
    echo "ok      $run_file"
  else
    status=$?
    [ "$status" -eq 1 ] || exit "$status"
    echo "too big $run_file"
    failed=1
  fi
done
exit "$failed"
