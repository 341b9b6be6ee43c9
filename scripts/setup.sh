#!/usr/bin/env bash
# Installs what building (and, with --browser, testing) Noom needs, skipping what is already
# there in the right version. Sourced by run.sh and test.sh; safe to run on its own.
#
# Everything comes from package registries (crates.io, npm, Debian): Trunk must never download a
# tool itself, so wasm-bindgen-cli is pinned to the exact wasm-bindgen in Cargo.lock and wasm-opt
# comes from npm's binaryen (Debian's binaryen is too old: the page dies at start-up).
set -euo pipefail

NOOM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NOOM_TOOLS="${NOOM_TOOLS:-$HOME/.cache/noom-tools}"
TRUNK_VERSION="0.22.1"
BINARYEN_VERSION="132.0.0"

export PATH="$NOOM_TOOLS/node_modules/.bin:$HOME/.cargo/bin:$PATH"
export TRUNK_SKIP_VERSION_CHECK=true

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  say "installing $* (apt)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

noom_setup() {
  local browser=0
  [ "${1:-}" = "--browser" ] && browser=1

  command -v cargo >/dev/null || { echo "error: Rust is not installed (https://rustup.rs)" >&2; exit 1; }
  if [ "$browser" = 1 ]; then
    if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
      apt_install chromium chromium-driver
    fi
    # `ip` (iproute2) brings up loopback inside the tests' private network namespace.
    command -v ip >/dev/null || apt_install iproute2
    # coturn: the TURN tests run Debian's turnserver and turnutils_uclient against ours.
    command -v turnutils_uclient >/dev/null || apt_install coturn
  fi
  command -v npm >/dev/null || apt_install nodejs npm

  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    say "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
  fi

  if ! wasm-opt --version 2>/dev/null | grep -q "version_${BINARYEN_VERSION%%.*}"; then
    say "installing wasm-opt (npm binaryen@$BINARYEN_VERSION)"
    mkdir -p "$NOOM_TOOLS"
    npm install --silent --no-save --no-audit --no-fund --prefix "$NOOM_TOOLS" "binaryen@$BINARYEN_VERSION"
  fi

  if ! trunk --version 2>/dev/null | grep -qx "trunk $TRUNK_VERSION"; then
    # trunk 0.22.1 declares rust-version 1.96.1 but builds and works on 1.95.
    say "installing trunk $TRUNK_VERSION (cargo install, ~9 minutes on 2 cores)"
    cargo install --locked trunk --version "$TRUNK_VERSION" --ignore-rust-version
  fi

  local wb
  wb=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$NOOM_ROOT/Cargo.lock")
  if [ -z "$wb" ]; then echo "error: no wasm-bindgen in Cargo.lock" >&2; exit 1; fi
  if ! wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $wb"; then
    # Not --locked: its lockfile pins a webpki-roots the registry mirror does not have.
    say "installing wasm-bindgen-cli $wb (matches Cargo.lock)"
    cargo install wasm-bindgen-cli --version "$wb"
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  noom_setup "$@"
fi
