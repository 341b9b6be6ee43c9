#!/usr/bin/env bash
# Builds the release bundle and the server with the bundle inside, then serves Noom on http://127.0.0.1:8080
# (override with NOOM_ADDR=0.0.0.0:8080, or pass any server flag: scripts/run.sh --help).
set -euo pipefail
source "$(dirname "$0")/setup.sh"
noom_setup
cd "$NOOM_ROOT"

say "building the web app (trunk build --release)"
trunk build --release
say "building the server, with the web app inside"
NOOM_BUNDLE_DIR="$NOOM_ROOT/dist" cargo build --release --locked -p server

addr="${NOOM_ADDR:-127.0.0.1:8080}"
server="${CARGO_TARGET_DIR:-$NOOM_ROOT/target}/release/server"
say "starting: open http://$addr in two browser tabs (or two machines), enter the same room name. Ctrl-C stops."
say "to deploy, copy this one file: $server"
exec "$server" --addr "$addr" "$@"
