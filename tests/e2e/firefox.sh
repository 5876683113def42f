#!/usr/bin/env bash
# A real call from headless Firefox ESR through `callgate serve`'s /demo page to the built-in echo endpoint
# (firefox.mjs): Firefox's WebRTC against the gateway, its fake microphone's 1 kHz tone heard back, and the
# INVITE's offer checked against tests/fixtures/sdp/browser/firefox_offer.sdp. Installs firefox-esr from
# Debian when missing and runs inside a loopback-only network namespace like run.sh, which calls it after
# the Chromium cases. Exits non-zero when the call fails.
#
#   tests/e2e/firefox.sh        (CALLGATE_BIN=/path/to/callgate skips the build)
set -euo pipefail
repo_dir="$(cd "$(dirname "$0")/../.." && pwd)"
if [ -n "${CALLGATE_BIN:-}" ]; then CALLGATE_BIN="$(realpath "$CALLGATE_BIN")"; fi
cd "$repo_dir"

# shellcheck source=tests/support/install.sh
source "$repo_dir/tests/support/install.sh"
install_missing node:nodejs npm:npm firefox-esr:firefox-esr unshare:util-linux ip:iproute2
widget_npm_ci "$repo_dir/widget"

work="$(mktemp -d "${TMPDIR:-/tmp}/callgate-e2e-firefox.XXXXXX")"
trap 'rm -rf "$work"' EXIT
if [ -z "${CALLGATE_BIN:-}" ]; then
  cargo build --locked --bin callgate
  cp "${CARGO_TARGET_DIR:-$repo_dir/target}/debug/callgate" "$work/callgate"
  CALLGATE_BIN="$work/callgate"
fi
# Firefox keeps caches under HOME; a fresh one leaves nothing behind.
export CALLGATE_BIN HOME="$work"

# shellcheck source=tests/e2e/namespace.sh
source "$repo_dir/tests/e2e/namespace.sh"
in_loopback_namespace 120 "e2e firefox" node --test --test-timeout=60000 "$repo_dir/tests/e2e/firefox.mjs"
echo "e2e firefox: the call passed"
