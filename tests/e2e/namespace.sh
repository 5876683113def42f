# Running a test command where only loopback exists, sourced by run.sh and firefox.sh:
#   source tests/e2e/namespace.sh
#   in_loopback_namespace SECONDS NAME CMD...   # CMD with a timeout of SECONDS; NAME prefixes the warning
# Loopback only, so that nothing can leave the machine and ICE pairs are 127.0.0.1 with 127.0.0.1. A PID
# namespace of its own too: when the run ends or the timeout strikes, the kernel kills every process left in
# it (gateway, SIPp, the browsers), so nothing outlives a failed run. Without root it runs on the host.
in_loopback_namespace() {
  local seconds="$1" name="$2"
  shift 2
  local namespace=(unshare --net --pid --fork --kill-child --mount --mount-proc)
  if [ "$(id -u)" = 0 ] && "${namespace[@]}" true 2>/dev/null; then
    timeout "$seconds" "${namespace[@]}" -- bash -c 'ip link set lo up && exec "$@"' _ "$@"
  else
    echo "$name: cannot make a network namespace (needs root); running on the host's loopback" >&2
    timeout "$seconds" "$@"
  fi
}
