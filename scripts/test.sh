#!/usr/bin/env bash
# The whole test suite, as a newcomer or CI runs it on a fresh machine:
# installs what the tests need, then format check, lints, and every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== toolchain"
cargo --version
rustc --version

echo "== services"
# The PostgreSQL and Redis tests start throwaway servers from the installed binaries (loopback
# ports, temporary directories; see crates/testkit). Install them when missing: a fresh machine
# may have only the psql client, so look for the server binaries themselves.
have_pg_server() {
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1
}
if ! have_pg_server || ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y postgresql redis-server
fi
have_pg_server && echo "postgresql: $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tail -1)"
echo "redis: $(command -v redis-server)"
# The console's browser check drives Debian's Chromium headless through chromedriver.
if ! command -v chromedriver >/dev/null 2>&1 || ! { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y chromium chromium-driver
fi
echo "chromium: $(command -v chromium || command -v chromium-browser), $(command -v chromedriver)"

# Where cargo puts binaries: CARGO_TARGET_DIR (or build.target-dir) when set, else ./target.
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
echo "target dir: $TARGET_DIR"

echo "== format"
cargo fmt --all -- --check

echo "== lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== official OpenAI and Anthropic Python SDKs against the embedded default"
cargo build -p tollgate --locked
# A venv records its own absolute path: one left by a moved or copied checkout is made anew.
if ! target/sdk-venv/bin/python -c 'import openai, anthropic, selenium' 2>/dev/null; then
    python3 -m venv --clear target/sdk-venv
    target/sdk-venv/bin/pip install -q --disable-pip-version-check openai anthropic selenium
fi
target/sdk-venv/bin/python scripts/sdk_check.py "$TARGET_DIR/debug/tollgate"

echo "== web console in a real browser (screenshots in $TARGET_DIR/console-shots)"
target/sdk-venv/bin/python scripts/console_check.py "$TARGET_DIR/debug/tollgate" "$TARGET_DIR/console-shots"

echo "== tests"
cargo test --workspace --locked
