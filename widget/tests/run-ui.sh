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

need_apt=()
for pair in node:nodejs npm:npm chromium:chromium; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "run-ui.sh: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -q >/dev/null || true
  $SUDO apt-get install -y -q "${need_apt[@]}" >/dev/null
fi

# npm ci replaces node_modules wholesale, so two runs at once would pull it from under each other: the
# lock serialises them, and the stamp (the lock file it was installed from) skips the install when current.
(
  flock 9
  if ! cmp -s package-lock.json node_modules/.callgate-installed-lock 2>/dev/null; then
    npm ci --ignore-scripts --no-audit --no-fund --prefer-offline
    cp package-lock.json node_modules/.callgate-installed-lock
  fi
) 9>"$widget_dir/.npm-install.lock"

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
