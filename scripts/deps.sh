#!/usr/bin/env bash
# Installs the Debian packages unlearn needs to build, test and run — only
# those missing, so it is quick on a machine that has them. Needs root
# (or sudo) when something is missing.
set -euo pipefail
pkgs=(gcc libc6-dev pkg-config meson ninja-build libblis-dev libyaml-dev zlib1g-dev check
      dataset-fashion-mnist)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
