#!/usr/bin/env bash
# The one test command: installs what the tests need when it is missing, starts a private PostgreSQL on
# loopback, then runs the formatter check, clippy, every Rust test and the widget's browser tests. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pair in cmake:cmake node:nodejs npm:npm sox:sox sipp:sip-tester tshark:tshark pg_ctlcluster:postgresql openssl:openssl baresip:baresip-core kamailio:kamailio; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "run.sh: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -q >/dev/null || true
  $SUDO apt-get install -y -q "${need_apt[@]}" >/dev/null
fi

# shellcheck source=tests/support/postgres.sh
source tests/support/postgres.sh
postgres_start
trap postgres_stop EXIT

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --all-targets -- "$@"
cargo test --locked --doc
# The widget's own tests: node unit tests and headless Chromium UI tests (installs nodejs, npm, chromium and
# the npm packages when missing).
bash widget/tests/run-ui.sh
# Real calls from headless Chromium through callgate to SIPp and the built-in echo (issue: the widget's
# end-to-end test), in a loopback-only network namespace.
bash tests/e2e/run.sh
echo "run.sh: all tests passed"
