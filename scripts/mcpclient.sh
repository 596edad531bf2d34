#!/usr/bin/env bash
# Installs the TypeScript MCP SDK client check (scripts/mcp-client) into a
# cache directory, once per package.json, and prints that directory. Node
# and npm come from Debian's packages when missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src="$root/scripts/mcp-client"
cache="${AGENTVAULT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agentvault}"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "installing nodejs and npm (Debian packages) for the MCP client check" >&2
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >&2
fi
key=$(sha256sum "$src/package.json" | cut -c1-16)
dir="$cache/mcp-client-$key"
if [ ! -d "$dir/node_modules/@modelcontextprotocol/sdk" ]; then
  mkdir -p "$dir"
  cp "$src/package.json" "$dir/"
  (cd "$dir" && npm install --no-audit --no-fund --loglevel=error >&2)
fi
cp "$src/check.mjs" "$dir/"
echo "$dir"
