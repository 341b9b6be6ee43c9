#!/usr/bin/env bash
# Builds the release bundle and the server, then serves Noom on http://127.0.0.1:8080
# (override with NOOM_ADDR=0.0.0.0:8080, or pass any server flag: scripts/run.sh --help).
set -euo pipefail
source "$(dirname "$0")/setup.sh"
noom_setup
cd "$NOOM_ROOT"

say "building the web app (trunk build --release)"
trunk build --release
say "building the server"
cargo build --release --locked -p server

addr="${NOOM_ADDR:-127.0.0.1:8080}"
say "starting: open http://$addr in two browser tabs (or two machines), enter the same room name. Ctrl-C stops."
exec "${CARGO_TARGET_DIR:-$NOOM_ROOT/target}/release/server" --addr "$addr" --dist "$NOOM_ROOT/dist" "$@"
