#!/usr/bin/env bash
# The whole test suite, from a clean clone: peers installed, formatting and lints checked, the fuzz
# targets type-checked, every test run against real peers on loopback, the journal tested on the
# encrypted (SQLCipher) build, and the Debian package built and linted.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-deps.sh
cargo fmt --all -- --check
python3 scripts/check-cycles.py --self-test
python3 scripts/check-cycles.py
cargo clippy --all-targets --locked -- -D warnings
cargo clippy --all-targets --locked --features fault-hooks -- -D warnings
# The fuzz targets are a workspace of their own (run one with `cargo +nightly fuzz run <target>`):
# checked here so that they keep up with the decoders they call.
cargo check --manifest-path fuzz/Cargo.toml --locked --bins
# One build for every test: the fault hooks (panics, stalls) some tests inject are compiled in.
cargo test --all-targets --locked --features fault-hooks
# The encrypted journal (SQLCipher, patient data at rest): the journal's tests on that build.
cargo test --locked --features sqlcipher --lib journal::
packaging/test-deb.sh
