#!/usr/bin/env bash
# The whole test suite: formatting, lints, every unit/integration/doc test, and the docs.
# README.md gives this command to new users; .ci/run calls it too.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features, warnings denied)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo test (unit, integration and doc tests)"
cargo test --workspace --all-features

step "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps

step "all checks passed"
