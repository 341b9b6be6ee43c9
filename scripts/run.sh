#!/usr/bin/env bash
# Builds the release bundle and the server with the bundle inside, then starts it.
#   scripts/run.sh           http://127.0.0.1:8080, for this machine (tabs side by side)
#   scripts/run.sh --lan     https on every interface (port 8443) with the built-in TURN relay, for
#                            a call with another machine; it prints the addresses to open there
# NOOM_ADDR overrides the address; any other server flag can follow (scripts/run.sh --help).
set -euo pipefail
source "$(dirname "$0")/setup.sh"
noom_setup
cd "$NOOM_ROOT"

addr="${NOOM_ADDR:-127.0.0.1:8080}"
if [ "${1:-}" = "--lan" ]; then
  shift
  addr="${NOOM_ADDR:-0.0.0.0:8443}"
fi

say "building the web app (trunk build --release)"
trunk build --release
say "building the server, with the web app inside"
NOOM_BUNDLE_DIR="$NOOM_ROOT/dist" cargo build --release --locked -p server

server="${CARGO_TARGET_DIR:-$NOOM_ROOT/target}/release/server"
say "starting on $addr: open the address it prints in two browser tabs (or on two machines), enter the same room name. Ctrl-C stops."
say "to deploy, copy this one file: $server"
exec "$server" --addr "$addr" "$@"
