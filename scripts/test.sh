#!/usr/bin/env bash
# The whole test suite: formatting, lints, every unit/integration/doc test, the docs, and the
# packages as crates.io would build them.
# README.md gives this command to new users; .ci/run calls it too.
#
# The integration tests start their own Redis, memcached and etcd servers (see
# tests/src/server.rs): from PYLOCK_TEST_REDIS_URL / PYLOCK_TEST_MEMCACHE_URL /
# PYLOCK_TEST_ETCD_URL, through testcontainers when a Docker engine answers, or from the
# redis-server, memcached and etcd binaries, which this script installs with apt-get (with
# protoc, which building pylock-etcd needs) when they are missing and it runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v memcached >/dev/null 2>&1 || missing+=(memcached)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
# pylock-etcd's client compiles etcd's protocol files: it needs protoc to build at all.
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    step "installing ${missing[*]} for the integration tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "note: ${missing[*]} not installed; tests that need them use Docker or are skipped (outside CI)" >&2
  fi
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features, warnings denied)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo test (unit, integration and doc tests)"
# A test whose server cannot be had outside CI is skipped and still shows `ok` (libtest cannot
# mark it ignored at run time); each skip is recorded here and listed at the end.
export PYLOCK_SKIP_LOG="${TMPDIR:-/tmp}/pylock-skipped-tests.$$"
rm -f "$PYLOCK_SKIP_LOG"
trap 'rm -f "$PYLOCK_SKIP_LOG"' EXIT
cargo test --workspace --all-features

step "cargo test without the load-time installer (feature auto-install off)"
cargo test -p pylock --no-default-features --features redis --test explicit_install

step "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps

step "cargo package (every crate builds from its own .crate, against the others)"
# The packages are verified against each other through a local registry under target/, which
# cargo extracts into $CARGO_HOME/registry/src/-<hash of its path>/ and then reuses while the
# version stays the same: a second clone at the same path would build the old sources.
# Remove those extractions of our own crates (only ours, only of local registries).
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/pylock-[0-9]* \
       "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/pylock-[a-z]*-[0-9]*
cargo package --workspace --allow-dirty

if [ -s "$PYLOCK_SKIP_LOG" ]; then
  step "all checks passed, but $(wc -l <"$PYLOCK_SKIP_LOG") tests were SKIPPED for want of a server"
  sort "$PYLOCK_SKIP_LOG"
  echo "(install redis-server and memcached, or start a Docker engine, to run them)"
else
  step "all checks passed"
fi
