#!/usr/bin/env bash
# The whole test suite, from a clean clone: peers installed, formatting and lints checked, every
# test run against real peers on loopback, and the Debian package built and linted.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
packaging/test-deb.sh
