#!/usr/bin/env bash
# Noom beside the tutorial app it replaces, measured the same way in one run, in headless
# Chromium with fake devices: cold-load bytes by resource and in total, time to an interactive
# welcome form, and call setup over 10 calls (min/median/max), each with the ratio
# Noom ÷ tutorial. Printed figures, not a test: it is not part of `cargo test`.
#
# Builds the release bundle and the release server (with the bundle inside) and `bench`; copies
# the tutorial app (../shared/bench/tutorial-app, or NOOM_TUTORIAL_DIR) into the target
# directory and runs `npm ci` there once; then measures inside a private network namespace with
# only `lo`, so no WebRTC traffic leaves the machine. The run is bounded (--deadline-mins,
# default 20) and every server and browser is killed by its PID when done.
#
# Extra arguments go to `bench run` (`scripts/bench.sh --calls 20 --loads 10`).
set -euo pipefail
source "$(dirname "$0")/setup.sh"
noom_setup --browser
cd "$NOOM_ROOT"

target="${CARGO_TARGET_DIR:-$NOOM_ROOT/target}"
tutorial_src="${NOOM_TUTORIAL_DIR:-$NOOM_ROOT/../shared/bench/tutorial-app}"
if [ ! -f "$tutorial_src/server.js" ]; then
  echo "error: no tutorial app at $tutorial_src (set NOOM_TUTORIAL_DIR)" >&2
  exit 2
fi

say "building the web app, then the server with it inside, and bench (release)"
cargo fetch --locked
trunk build --release
NOOM_BUNDLE_DIR="$NOOM_ROOT/dist" cargo build --release --locked -p server -p bench

say "preparing the tutorial app (npm ci, once)"
work="$target/bench/tutorial-app"
mkdir -p "$work"
# The sources are read-only: replace the copies rather than write into them.
(cd "$tutorial_src" && find . -path ./node_modules -prune -o -type f -print) | while read -r file; do
  mkdir -p "$work/$(dirname "$file")"
  cp --remove-destination "$tutorial_src/$file" "$work/$file"
  chmod u+w "$work/$file"
done
if ! cmp -s "$work/package-lock.json" "$work/.installed-lock" || [ ! -d "$work/node_modules/socket.io" ]; then
  (cd "$work" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$work/package-lock.json" "$work/.installed-lock"
fi

commit=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then commit="$commit+changes"; fi

userns=()
[ "$(id -u)" -eq 0 ] || userns=(-r)
say "measuring (a private network namespace with only loopback)"
start=$(date +%s)
set +e
unshare "${userns[@]}" -n -p -f --mount-proc \
  bash -c 'ip link set lo up && exec "$@"' -- \
  "$target/release/bench" run --tutorial "$work" --server-bin "$target/release/server" \
  --commit "$commit" "$@"
status=$?
set -e
echo "(measuring took $(($(date +%s) - start)) s)"
exit "$status"
