#!/usr/bin/env bash
# The weekly update, as every scheduler here runs it: this week's drop from the
# incoming folder, one `ratchet update`, its whole output appended to a log.
#
#   RATCHET_REPO      the clone to update (default: the clone this script is in)
#   RATCHET_INCOMING  where drops arrive, one folder per ISO week: $RATCHET_INCOMING/2026-W48/
#   RATCHET_LOGS      where logs go (default: $RATCHET_REPO/../ratchet-logs), one file per week
#
# Exit code: ratchet update's (0 promoted, 3 refused by a gate, 2 bad input,
# 4 another update running, 1 other failure); 0 with a note when no drop arrived.
set -uo pipefail
repo=${RATCHET_REPO:-$(cd "$(dirname "$0")/.." && pwd)}
incoming=${RATCHET_INCOMING:?set RATCHET_INCOMING to the folder where weekly drops arrive}
logs=${RATCHET_LOGS:-$repo/../ratchet-logs}
week=$(date -u +%G-W%V)
mkdir -p "$logs"
log="$logs/update-$week.log"
{
  echo "=== ratchet update $week, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(hostname)"
  if [ ! -e "$incoming/$week" ]; then
    echo "no drop for $week in $incoming: nothing to do"
    exit 0
  fi
  cd "$repo" && "$repo/.venv/bin/ratchet" update --drop "$incoming/$week" --week "$week"
  rc=$?
  echo "=== exit $rc ($(case $rc in 0) echo promoted;; 3) echo refused by a gate;; 5) echo held: a gate could not decide;; 2) echo bad input;;
                     4) echo another update running;; *) echo failure: rerun to finish;; esac))"
  exit $rc
} >>"$log" 2>&1
