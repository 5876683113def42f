# Installing what a test script needs when it is missing. Sourced by tests/e2e/run.sh and
# widget/tests/run-ui.sh:
#   source tests/support/install.sh
#   install_missing node:nodejs sox:sox     # COMMAND:DEBIAN_PACKAGE pairs; apt-get only for missing commands
#   widget_npm_ci widget                     # npm ci in widget/ unless node_modules matches its lock file

install_missing() {
  local pair missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  echo "installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null || true
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
}

# npm ci replaces node_modules wholesale, so two runs at once would pull it from under each other: the
# lock serialises them, and the stamp (the lock file it was installed from) skips the install when current.
widget_npm_ci() {
  local widget_dir="$1"
  (
    cd "$widget_dir"
    flock 9
    if ! cmp -s package-lock.json node_modules/.callgate-installed-lock 2>/dev/null; then
      npm ci --ignore-scripts --no-audit --no-fund --prefer-offline
      cp package-lock.json node_modules/.callgate-installed-lock
    fi
  ) 9>"$widget_dir/.npm-install.lock"
}
