#!/usr/bin/env bash
# Accuracy benchmark: trains resnet18 (width 0.25), cnn and mlp on full
# Fashion-MNIST with the recipe in bench/configs/fmnist-*.yaml and prints
# each model's final accuracies. Usage, from the repository root after
# scripts/build.sh:  bench/accuracy.sh [mlp|cnn|resnet18 ...]
# Takes tens of minutes; logs go to runs/bench-fmnist-<model>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(mlp cnn resnet18)
mkdir -p runs
for m in "${models[@]}"; do
  log="runs/bench-fmnist-$m.log"
  if build/core/unlearn run "bench/configs/fmnist-$m.yaml" -o "runs/bench-fmnist-$m" > "$log" 2>&1; then
    echo "$m: $(grep -E '\] original:' "$log" | tail -n1 | sed 's/^\[[^]]*\] original: //')"
  else
    echo "$m: failed, see $log"
  fi
done
