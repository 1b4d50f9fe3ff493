#!/usr/bin/env bash
# Installs unlearn into a temporary root, builds an out-of-tree plugin with
# nothing but `pkg-config unlearn`, and runs a pipeline that uses it with the
# installed CLI.
set -euo pipefail
builddir=$1
srcdir=$(cd "$(dirname "$0")" && pwd)
root=$(mktemp -d /tmp/ul_sdk_XXXXXX)
trap 'rm -rf "$root"' EXIT

meson install -C "$builddir" --destdir "$root" --no-rebuild --quiet >/dev/null
pc=$(find "$root" -name unlearn.pc | head -n1)
[ -n "$pc" ] || { echo "unlearn.pc was not installed"; exit 1; }
export PKG_CONFIG_PATH=$(dirname "$pc") PKG_CONFIG_SYSROOT_DIR=$root
plugindir=$root$(pkg-config --variable=plugindir unlearn | sed "s|^$root||")
libdir=$(dirname "$(find "$root" -name 'libunlearn.so' | head -n1)")
bin=$(find "$root" -path '*/bin/unlearn' | head -n1)

mkdir -p "$root/my_plugins"
cc -std=c11 -Wall -Wextra -Werror -fPIC -shared -fvisibility=hidden \
   -o "$root/my_plugins/softmax_regression.so" "$srcdir/softmax_regression.c" \
   $(pkg-config --cflags --libs unlearn)

cat > "$root/pipe.yaml" <<YAML
seed: 3
dataset:
  name: synthetic
  params: {n_train: 300, n_test: 100, classes: 3, width: 5}
model:
  name: softmax_regression
train: {epochs: 3, batch_size: 32, lr: 0.1}
YAML
export LD_LIBRARY_PATH=$libdir UNLEARN_PLUGIN_PATH=$plugindir:$root/my_plugins
"$bin" plugins | grep -q "softmax_regression" || { echo "plugin not listed"; exit 1; }
"$bin" run "$root/pipe.yaml" -o "$root/run"
grep -q '"accuracy"' "$root/run/metrics.json"
test -f "$root/run/checkpoints/original_w1_s3.safetensors"
echo "out-of-tree plugin built against the installed SDK and ran"
