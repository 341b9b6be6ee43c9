#!/usr/bin/env bash
# Every check and every test, browser ones included: formatting, the release bundle and its
# size budget, clippy (native and wasm), then all tests inside a private network namespace that
# has only `lo`, so WebRTC between the test browsers never leaves this machine. The PID namespace
# also ends any browser a failing test could leave behind.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
noom_setup --browser
cd "$NOOM_ROOT"

say "fetching crates"
cargo fetch --locked
say "cargo fmt --check"
cargo fmt --all --check
say "building the release bundle (dist/), which the server embeds and the browser tests load"
trunk build --release
# Every cargo command below builds the server with this bundle inside (server/build.rs).
export NOOM_BUNDLE_DIR="$NOOM_ROOT/dist"
say "bundle size budget (bytes after brotli, as the server sends them)"
cargo run --locked --quiet -p bench -- budget --dist "$NOOM_BUNDLE_DIR"
say "clippy (native: shared, server, frontend logic, bench)"
cargo clippy --locked --workspace --all-targets -- -D warnings
say "clippy (wasm frontend)"
cargo clippy --locked -p frontend --target wasm32-unknown-unknown -- -D warnings
say "building tests"
# --all-targets: every lib, bin and integration test (there are no doc tests, whose empty
# "0 passed" summaries would otherwise close the output).
cargo test --locked --workspace --all-targets --no-run

# Inside the namespace there is no network at all: everything was fetched and built above.
userns=()
[ "$(id -u)" -eq 0 ] || userns=(-r)
say "running tests (unit, websocket integration, headless Chromium end to end)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
unshare "${userns[@]}" -n -p -f --mount-proc \
  bash -c 'ip link set lo up && exec cargo test --offline --locked --workspace --all-targets --no-fail-fast "$@"' -- "$@" 2>&1 |
  tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line with the totals over every test binary.
passed=$(grep '^test result:' "$log" | grep -o '[0-9]* passed' | awk '{ n += $1 } END { print n + 0 }')
failed=$(grep '^test result:' "$log" | grep -o '[0-9]* failed' | awk '{ n += $1 } END { print n + 0 }')
echo
echo "tests: $passed passed, $failed failed"
exit "$status"
