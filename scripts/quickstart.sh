#!/usr/bin/env bash
# The README's first command: install what is missing, build, run the
# quick-start pipeline end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh >/dev/null
exec build/core/unlearn run configs/quickstart.yaml "$@"
