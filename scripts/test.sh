#!/usr/bin/env bash
# The README's second command: install what is missing, build, run the whole
# test suite, and end with one line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh || exit 1
bash scripts/build.sh || exit 1
meson test -C build --print-errorlogs --num-processes 1 "$@" | tee build/test-summary.txt
status=${PIPESTATUS[0]}
ok=$(awk '/^Ok:/ {print $2}' build/test-summary.txt)
expfail=$(awk '/^Expected Fail:/ {print $3}' build/test-summary.txt)
fail=$(awk '/^Fail:/ {print $2}' build/test-summary.txt)
unexp=$(awk '/^Unexpected Pass:/ {print $3}' build/test-summary.txt)
timeout=$(awk '/^Timeout:/ {print $2}' build/test-summary.txt)
skipped=$(awk '/^Skipped:/ {print $2}' build/test-summary.txt)
passed=$(( ${ok:-0} + ${expfail:-0} ))
failed=$(( ${fail:-0} + ${unexp:-0} + ${timeout:-0} ))
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "${passed} passed, ${failed} failed, ${skipped:-0} skipped"
exit "$status"
