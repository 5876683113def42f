#!/usr/bin/env bash
# The load benchmark, one command from a fresh clone (needs root for the network namespace):
#
#   bash tests/load/run.sh                 # N = 50, 100, 200, then +100 until loss, failures or saturation
#   bash tests/load/run.sh --calls "50 100" --max 100 --hold 20 --passthrough 0
#
# Builds release, then inside a network namespace that has only loopback starts, for every row, a fresh
# `callgate serve` (temporary SQLite, demo off, log level warn, 2 media workers, limits raised so that the
# per-IP limits do not refuse the load) with a trunk to SIPp and a widget, and SIPp as the PBX answering
# with tests/sipp/answer.xml and echoing RTP (-rtp_echo). callgate-load then places N concurrent calls
# and prints one row per N. A row stops the climb when a call fails or drops, loss exceeds 0.1 %, or the
# gateway, SIPp and callgate-load together use >= 95 % of all cores. One passthrough row follows (PCMU
# offer, transcode = when_needed). Rows are appended as JSON lines to --json-out when given.
# docs/performance.md explains the columns.
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() {
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  cat <<'EOF'
Options:
  --calls "LIST"     first rows (default "50 100 200")
  --step N           increment after the listed rows (default 100)
  --max N            largest N tried (default 1000)
  --rate CPS         calls started per second (default 20)
  --hold SECONDS     how long all calls stay up together (default 30)
  --settle SECONDS   start of the hold left out of the figures (default 5)
  --passthrough N    calls in the passthrough row; 0 skips it (default 200)
  --workers N        gateway media workers (default 2)
  --complexity N     gateway Opus complexity (default: the gateway's default)
  --profile P        cargo profile to build and run (default release)
  --no-build         use the binaries already built
  --json-out FILE    append each row's JSON line to FILE
  --keep             keep the temporary directory (configs, logs)
  --no-capture       do not capture SIP with tshark to measure the setup time the gateway adds
  --perf             profile the gateway with perf during each row's steady window and print the top
                     symbols (adds a little CPU; keep it off for the figures you publish)
EOF
}

ROWS="50 100 200"
STEP=100
MAX_CALLS=1000
RATE=20
HOLD=30
SETTLE=5
PASS_CALLS=200
WORKERS=2
COMPLEXITY=""
PROFILE=release
BUILD=1
JSON_OUT=""
KEEP=0
PERF=0
CAPTURE=1
ARGS=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --calls) ROWS="$2"; shift 2 ;;
    --step) STEP="$2"; shift 2 ;;
    --max) MAX_CALLS="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    --hold) HOLD="$2"; shift 2 ;;
    --settle) SETTLE="$2"; shift 2 ;;
    --passthrough) PASS_CALLS="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --complexity) COMPLEXITY="$2"; shift 2 ;;
    --profile) PROFILE="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --json-out) JSON_OUT="$(realpath -m "$2")"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --perf) PERF=1; shift ;;
    --no-capture) CAPTURE=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
if [ "$PROFILE" = dev ] || [ "$PROFILE" = debug ]; then
  PROFILE_DIR=debug; PROFILE=dev
else
  PROFILE_DIR="$PROFILE"
fi
BIN="$(realpath -m "$TARGET_DIR/$PROFILE_DIR")"

# Outside the namespace: check root, install SIPp, build, then re-enter this script in a fresh namespace.
if [ -z "${CALLGATE_LOAD_NETNS:-}" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "run.sh: needs root (unshare --net); try: sudo -E bash $0 ${ARGS[*]}" >&2
    exit 2
  fi
  need_apt=()
  for pair in sipp:sip-tester curl:curl cmake:cmake tshark:tshark; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
  done
  if [ ${#need_apt[@]} -gt 0 ]; then
    echo "run.sh: installing ${need_apt[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null || true
    apt-get install -y -q "${need_apt[@]}" >/dev/null
  fi
  if [ "$BUILD" = 1 ]; then
    cargo build --profile "$PROFILE" --bins
  fi
  exec unshare --net -- env CALLGATE_LOAD_NETNS=1 bash -c 'ip link set lo up && exec bash "$0" "$@"' "$0" "${ARGS[@]}"
fi

# Inside the namespace: only loopback exists, so every port is free and nothing leaves the machine.
CALLGATE="$BIN/callgate"
LOAD="$BIN/callgate-load"
for binary in "$CALLGATE" "$LOAD"; do
  [ -x "$binary" ] || { echo "run.sh: $binary is missing (build first)" >&2; exit 1; }
done
# Every call costs the gateway a WebSocket and two RTP sockets, and callgate-load a WebSocket and a UDP
# socket: raise the open-file limit as far as allowed.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
WORK="$(mktemp -d /tmp/callgate-load.XXXXXX)"
GW_PID=""
SIPP_PID=""
stop_pid() {
  local pid="$1"
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  stop_pid "$GW_PID"
  stop_pid "$SIPP_PID"
  if [ "$KEEP" = 1 ]; then echo "run.sh: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

HTTP=127.0.0.1:8080
PBX_PORT=5060
DB="sqlite://$WORK/callgate.db"
ORIGIN=https://load.example
"$CALLGATE" --database "$DB" trunk add pbx --host 127.0.0.1 --port "$PBX_PORT" --transport udp >/dev/null
"$CALLGATE" --database "$DB" widget add load --trunk pbx --destination 100 --origin "$ORIGIN" \
  --max-concurrent 100000 --max-per-minute 100000 >/dev/null
WIDGET="$("$CALLGATE" --database "$DB" widget show load --json | sed -n 's/.*"public_id": *"\([^"]*\)".*/\1/p')"
[ -n "$WIDGET" ] || { echo "run.sh: no widget id" >&2; exit 1; }

write_config() { # MODE → the config file's path
  local path="$WORK/callgate-$1.toml"
  cat >"$path" <<EOF
[http]
listen = "$HTTP"
[https]
listen = ""
[sip]
udp_listen = "127.0.0.1:5070"
tcp_listen = "127.0.0.1:5070"
options_ping_interval_secs = 0
[media]
public_ip = "127.0.0.1"
bind_ip = "127.0.0.1"
webrtc_port = 10000
workers = $WORKERS
rtp_port_min = 20000
rtp_port_max = 39999
transcode = "$1"
$( [ -n "$COMPLEXITY" ] && echo "opus_complexity = $COMPLEXITY" )
[database]
url = "$DB"
[log]
level = "warn"
[limits]
max_calls = 100000
per_ip_calls_per_minute = 100000
per_ip_concurrent_calls = 100000
max_ws_connections = 100000
drain_secs = 1
[demo]
enabled = false
EOF
  echo "$path"
}

start_row() { # MODE ROW-NAME: fresh SIPp and gateway, so that every row starts from the same memory
  sipp -sf tests/sipp/answer.xml -i 127.0.0.1 -mi 127.0.0.1 -p "$PBX_PORT" -mp 6000 -t u1 \
    -rtp_echo -m 100000000 -nostdin -trace_err -error_file "$WORK/sipp-$2.err" \
    >"$WORK/sipp-$2.out" 2>&1 &
  SIPP_PID=$!
  "$CALLGATE" serve --config "$(write_config "$1")" >"$WORK/callgate-$2.log" 2>&1 &
  GW_PID=$!
  for _ in $(seq 300); do
    if curl -sf "http://$HTTP/readyz" >/dev/null 2>&1; then return 0; fi
    kill -0 "$GW_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "run.sh: the gateway did not become ready:" >&2
  cat "$WORK/callgate-$2.log" >&2
  exit 1
}

end_row() {
  stop_pid "$GW_PID"; GW_PID=""
  stop_pid "$SIPP_PID"; SIPP_PID=""
}

# The setup time the gateway itself adds, from a capture of SIP on both sides: WebSocket INVITE in →
# UDP INVITE out, plus UDP 200 in → WebSocket 200 out. The two legs have different Call-IDs, so the n-th
# browser INVITE is paired with the n-th INVITE to the PBX: right at the rates used here, where a call
# is forwarded long before the next one arrives. Prints "n p50 p99 max" in ms.
setup_added() { # PCAP
  tshark -r "$1" -Y 'sip.CSeq.method == "INVITE"' -T fields -e frame.time_epoch -e tcp.srcport \
    -e tcp.dstport -e udp.srcport -e sip.Method -e sip.Status-Code -e sip.Call-ID 2>/dev/null \
  | awk -F'\t' '
      $5 == "INVITE" && $3 == 8080 { if (!($7 in wi)) { wi[$7] = $1; wo[++nw] = $7 }; next }
      $5 == "INVITE" && $4 == 5070 { if (!($7 in ui)) { ui[$7] = $1; uo[++nu] = $7 }; next }
      $6 == "200" && $2 == 8080 { if (!($7 in w2)) w2[$7] = $1; next }
      $6 == "200" && $4 == 5060 { if (!($7 in u2)) u2[$7] = $1; next }
      END {
        for (i = 1; i <= nw && i <= nu; i++) {
          w = wo[i]; u = uo[i]
          if ((w in w2) && (u in u2)) printf "%.3f\n", ((ui[u] - wi[w]) + (w2[w] - u2[u])) * 1000
        }
      }' \
  | sort -n \
  | awk '{ v[NR] = $1 } END {
      if (NR == 0) { print "0 - - -"; exit }
      p50 = int(NR * 0.50); if (p50 < NR * 0.50) p50++
      p99 = int(NR * 0.99); if (p99 < NR * 0.99) p99++
      printf "%d %.2f %.2f %.2f\n", NR, v[p50], v[p99], v[NR] }'
}

# Runs one row; returns callgate-load's status (0 clean, 2 failures, 3 loss) and leaves in BUSY the share
# of the machine the gateway, SIPp and callgate-load used together.
BUSY=0
run_row() { # CALLS MODE OFFER
  local calls="$1" mode="$2" offer="$3" name="$1-$2" status=0
  local capture_pid=""
  if [ "$CAPTURE" = 1 ]; then
    tshark -i lo -f "tcp port 8080 or udp port $PBX_PORT" -w "$WORK/sip-$name.pcapng" -q >/dev/null 2>&1 &
    capture_pid=$!
    sleep 1
  fi
  start_row "$mode" "$name"
  local perf_pid=""
  if [ "$PERF" = 1 ]; then
    # Setup takes calls/rate seconds (plus a margin), then the window opens after the settle time.
    local delay length
    delay="$(awk -v n="$calls" -v r="$RATE" -v s="$SETTLE" 'BEGIN { printf "%.1f", n / r + s + 2 }')"
    length="$(awk -v h="$HOLD" -v s="$SETTLE" 'BEGIN { printf "%.1f", h - s - 3 }')"
    (sleep "$delay" && perf record -F 499 -p "$GW_PID" -o "$WORK/perf-$name.data" -- sleep "$length" \
      >/dev/null 2>&1) &
    perf_pid=$!
  fi
  "$LOAD" --url "ws://$HTTP/ws" --target "sip:$WIDGET@127.0.0.1" --origin "$ORIGIN" \
    --calls "$calls" --rate "$RATE" --hold "$HOLD" --settle "$SETTLE" --offer "$offer" \
    --pid "$GW_PID" --other-pid "$SIPP_PID" --metrics "http://$HTTP/metrics" \
    --max-failed-percent 0 --max-loss-percent 0.1 --row --json --quiet \
    >"$WORK/load-$name.out" 2>"$WORK/load-$name.err" || status=$?
  if [ -n "$perf_pid" ]; then
    wait "$perf_pid" || true
    perf report -i "$WORK/perf-$name.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
      | grep -E '^ +[0-9]' | head -25 >"$WORK/perf-$name.txt" || true
  fi
  end_row
  if [ -n "$capture_pid" ]; then
    kill -INT "$capture_pid" 2>/dev/null || true
    wait "$capture_pid" 2>/dev/null || true
  fi
  if [ ! -s "$WORK/load-$name.out" ]; then
    echo "run.sh: callgate-load produced nothing for $name:" >&2
    cat "$WORK/load-$name.err" >&2
    return 1
  fi
  sed -n 1p "$WORK/load-$name.out"
  local json
  json="$(sed -n 2p "$WORK/load-$name.out")"
  [ -z "$JSON_OUT" ] || echo "$json" >>"$JSON_OUT"
  BUSY="$(echo "$json" | sed -n 's/.*"measured_busy_percent":\([0-9.]*\).*/\1/p')"
  if [ "$status" != 0 ]; then
    sed 's/^/    /' "$WORK/load-$name.err" | grep -v '^\s*$' | tail -5
  fi
  if [ -s "$WORK/sip-$name.pcapng" ]; then
    local n p50 p99 max
    read -r n p50 p99 max < <(setup_added "$WORK/sip-$name.pcapng")
    echo "    setup added by the gateway (SIP capture, ms): p50 $p50, p99 $p99, max $max over $n calls"
    [ -z "$JSON_OUT" ] || echo "{\"calls\":$calls,\"offer\":\"$offer\",\"gateway_setup_added_ms\":{\"count\":$n,\"p50\":$p50,\"p99\":$p99,\"max\":$max}}" >>"$JSON_OUT"
  fi
  if [ -s "$WORK/perf-$name.txt" ]; then
    echo "    gateway profile, steady window (perf, self time):"
    sed 's/^/    /' "$WORK/perf-$name.txt"
  fi
  return "$status"
}

echo "callgate load benchmark — $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(uname -r)"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), profile $PROFILE, media workers $WORKERS, rate $RATE cps, hold $HOLD s (first $SETTLE s left out), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "transcoded rows: Chrome offer (Opus), transcode = always$( [ -n "$COMPLEXITY" ] && echo ", opus_complexity = $COMPLEXITY" ); setup/dtls/jitter/rtt in ms"
"$LOAD" --row-header

calls_list=()
for n in $ROWS; do calls_list+=("$n"); done
next="${calls_list[-1]}"
while [ $((next + STEP)) -le "$MAX_CALLS" ]; do next=$((next + STEP)); calls_list+=("$next"); done
for n in "${calls_list[@]}"; do
  [ "$n" -le "$MAX_CALLS" ] || break
  status=0
  run_row "$n" always chrome || status=$?
  if [ "$status" != 0 ]; then
    echo "run.sh: stopping the climb at $n calls (callgate-load exit $status: 2 = failed or dropped calls, 3 = loss > 0.1 %)"
    break
  fi
  if awk -v b="$BUSY" 'BEGIN { exit !(b >= 95) }'; then
    echo "run.sh: stopping the climb at $n calls: gateway, SIPp and callgate-load used ${BUSY} % of the machine"
    break
  fi
done

if [ "$PASS_CALLS" -gt 0 ]; then
  echo "passthrough row: PCMU-only offer, transcode = when_needed"
  run_row "$PASS_CALLS" when_needed pcmu || true
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
