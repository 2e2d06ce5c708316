#!/usr/bin/env bash
# The whole test suite, as a newcomer or CI runs it on a fresh machine:
# installs what the tests need, then format check, lints, and every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== toolchain"
cargo --version
rustc --version

echo "== format"
cargo fmt --all -- --check

echo "== lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== tests"
cargo test --workspace --locked
