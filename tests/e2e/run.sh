#!/usr/bin/env bash
# The end-to-end test: headless Chromium (fake microphone playing a 440 Hz tone) calls through the real
# `callgate serve` to SIPp and to the built-in echo endpoint (widget/tests/e2e.mjs), a page with its own
# SIP.js softphone calls a widget the same way (widget/tests/e2e-sipjs.mjs), its JsSIP offer is checked
# against the golden fixture (browser_offers.mjs), then headless Firefox calls the echo (firefox.sh).
# Installs what is missing (chromium, sox, sipp, nodejs, npm from Debian; the npm packages from
# widget/package-lock.json), builds the binary, and runs everything inside a loopback-only network
# namespace. Screenshots of each widget state and the gateway's log go to tests/artifacts/e2e/. Exits
# non-zero when a case fails.
#
#   tests/e2e/run.sh            (CALLGATE_BIN=/path/to/callgate skips the build)
set -euo pipefail
repo_dir="$(cd "$(dirname "$0")/../.." && pwd)"
widget_dir="$repo_dir/widget"
artifacts="${ARTIFACTS:-$repo_dir/tests/artifacts/e2e}"
artifacts="$(mkdir -p "$artifacts" && cd "$artifacts" && pwd)"
if [ -n "${CALLGATE_BIN:-}" ]; then CALLGATE_BIN="$(realpath "$CALLGATE_BIN")"; fi
cd "$repo_dir" # where cargo runs, so a relative CARGO_TARGET_DIR means the same to it and to us

# shellcheck source=tests/support/install.sh
source "$repo_dir/tests/support/install.sh"
install_missing node:nodejs npm:npm chromium:chromium sox:sox sipp:sip-tester unshare:util-linux ip:iproute2
widget_npm_ci "$widget_dir"

work="$(mktemp -d "${TMPDIR:-/tmp}/callgate-e2e-run.XXXXXX")"
trap 'rm -rf "$work"' EXIT

if [ -z "${CALLGATE_BIN:-}" ]; then
  cargo build --locked --bin callgate
  built="${CARGO_TARGET_DIR:-$repo_dir/target}/debug/callgate"
  # A hard link keeps this build's binary for the run even if another build replaces the file meanwhile.
  ln "$built" "$work/callgate" 2>/dev/null || cp "$built" "$work/callgate"
  CALLGATE_BIN="$work/callgate"
fi

sox -n -r 48000 -c 1 -b 16 "$work/tone.wav" synth 30 sine 440 gain -6
rm -f "$artifacts"/*.png "$artifacts"/callgate.log

export CALLGATE_BIN TONE_WAV="$work/tone.wav" ARTIFACTS="$artifacts"
tests=(node --test --test-concurrency=1 --test-timeout=120000 "$widget_dir/tests/e2e-checks.test.mjs"
  "$widget_dir/tests/e2e.mjs" "$widget_dir/tests/e2e-sipjs.mjs" "$repo_dir/tests/e2e/browser_offers.mjs")
cd "$widget_dir"
# shellcheck source=tests/e2e/namespace.sh
source "$repo_dir/tests/e2e/namespace.sh"
in_loopback_namespace 240 e2e "${tests[@]}"
bash "$repo_dir/tests/e2e/firefox.sh"
echo "e2e: all cases passed; screenshots and callgate.log in $artifacts"
