#!/usr/bin/env bash
# Widget tests without a gateway: the node unit tests of the pure parts and the Chromium UI tests
# (tests/ui.mjs). Installs what is missing (nodejs, npm, chromium from Debian; npm packages from
# package-lock.json), bundles widget.js with the same build.mjs cargo's build.rs uses, and saves a
# screenshot of each widget state to tests/artifacts/widget/. Safe to rerun and to run twice at once.
set -euo pipefail
widget_dir="$(cd "$(dirname "$0")/.." && pwd)"
repo_dir="$(dirname "$widget_dir")"
artifacts="${ARTIFACTS:-$repo_dir/tests/artifacts/widget}"
cd "$widget_dir"

# shellcheck source=../../tests/support/install.sh
source "$repo_dir/tests/support/install.sh"
install_missing node:nodejs npm:npm chromium:chromium
widget_npm_ci "$widget_dir"

mkdir -p "$artifacts"
node build.mjs --outfile "$artifacts/widget.js"

tests=(node --test --test-concurrency=1 tests/unit.test.mjs tests/ui.mjs)
export WIDGET_JS="$artifacts/widget.js" ARTIFACTS="$artifacts"
# Loopback only when we may make a network namespace (root): nothing can leave the machine.
if [ "$(id -u)" = 0 ] && unshare --net true 2>/dev/null; then
  unshare --net -- bash -c 'ip link set lo up && exec "$@"' _ "${tests[@]}"
else
  "${tests[@]}"
fi
echo "run-ui.sh: screenshots in $artifacts"
