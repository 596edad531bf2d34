#!/usr/bin/env bash
# The whole test suite, as CI runs it: builds (or reuses) the dev Vault
# server, then vets and runs every test with the race detector, including
# the tests against real Vault Transit and the real agentvault binary, and
# a short run of every fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."

AGENTVAULT_DEVVAULT=$(scripts/devvault.sh)
export AGENTVAULT_DEVVAULT AGENTVAULT_REQUIRE_VAULT=1

echo "== go vet"
go vet ./...

echo "== go test -race"
go test -race -count=1 -timeout 20m ./...

echo "== fuzz (${FUZZTIME:=5s} per target)"
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
    go test "$pkg" -run='^$' -fuzz="^${target}\$" -fuzztime="$FUZZTIME" >/dev/null || {
      echo "fuzz target $target in $pkg failed; rerun: go test $pkg -run='^$' -fuzz='^${target}\$'" >&2
      exit 1
    }
    echo "ok   $pkg $target"
  done
done
