#!/usr/bin/env bash
# Builds the dev Vault server (internal/devvault: Vault's own core with the
# real Transit engine, for tests only) and prints the path of the binary.
# The binary is cached under ${AGENTVAULT_CACHE_DIR:-~/.cache/agentvault},
# keyed by the module's sources and the Go version, so only the first run
# on a machine pays for the build (about 2.8 GB of modules, ~6 minutes).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src="$root/internal/devvault"
cache="${AGENTVAULT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agentvault}"
key=$( (cat "$src/go.mod" "$src/go.sum" "$src/main.go"; go version) | sha256sum | cut -c1-16)
bin="$cache/devvault-$key"
if [ ! -x "$bin" ]; then
  mkdir -p "$cache"
  echo "building the dev Vault server (first run on this machine: downloads Vault's modules, several minutes)..." >&2
  start=$(date +%s)
  (cd "$src" && GOFLAGS=-mod=mod go build -trimpath -o "$bin.tmp" .)
  mv "$bin.tmp" "$bin"
  echo "dev Vault built in $(( $(date +%s) - start ))s: $bin" >&2
fi
echo "$bin"
