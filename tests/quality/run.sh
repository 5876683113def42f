#!/usr/bin/env bash
# The speech-quality benchmark (docs/quality.md): synthesized speech goes browser → callgate → SIPp echo →
# callgate → browser at each gateway Opus complexity, and what comes back is scored with ITU-T P.862
# narrowband (pip `pesq`), next to reference lines (G.711 alone, the codecs alone) and the codec CPU per
# call. Installs what it needs when missing (espeak-ng, sox, sipp, a Python venv with pesq), builds
# release, prints a table. A benchmark, not a test: it takes about ten minutes and its figures move a
# little between runs. Everything runs on 127.0.0.1.
#
#   tests/quality/run.sh       all complexities, two undisturbed calls each (at most four calls)
#   QUALITY_COMPLEXITIES="3 5" QUALITY_RUNS=1 QUALITY_MAX_CALLS=2 tests/quality/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
complexities=${QUALITY_COMPLEXITIES:-0 1 2 3 5 7 10}
runs=${QUALITY_RUNS:-2}
max_calls=${QUALITY_MAX_CALLS:-4}

# --- tools -------------------------------------------------------------------------------------------
need_apt=()
# cc and cmake build libopus, node and npm the widget (build.rs); pesq compiles against Python's headers.
for pair in espeak-ng:espeak-ng sox:sox sipp:sip-tester curl:curl cc:build-essential cmake:cmake \
  node:nodejs npm:npm python3:python3; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
python3 -c 'import os, sysconfig; assert os.path.exists(sysconfig.get_paths()["include"] + "/Python.h")' \
  2>/dev/null || need_apt+=(python3-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "quality: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -q >/dev/null || true
  $SUDO apt-get install -y -q "${need_apt[@]}" >/dev/null
fi
venv=${XDG_CACHE_HOME:-$HOME/.cache}/callgate-quality/venv
if ! "$venv/bin/python" -c 'import numpy, pesq' 2>/dev/null; then
  echo "quality: creating $venv with numpy and pesq"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q numpy
  # pesq builds its C extension against the numpy just installed.
  "$venv/bin/pip" install -q pesq
fi
py="$venv/bin/python"
audio="$py $repo/tests/quality/audio.py"

echo "quality: building release"
cargo build --release --locked --bin callgate --example quality
target=${CARGO_TARGET_DIR:-$repo/target}
callgate="$target/release/callgate"
quality="$target/release/examples/quality"
work="$target/quality"
rm -rf "$work" && mkdir -p "$work" && cd "$work"
results="$work/results.jsonl"
: >"$results"

# Only the processes this script started, and only while they run (a reaped pid may be reused).
sipp_pid=""
gateway=""
cleanup() {
  for pid in $gateway $sipp_pid; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

# --- speech ------------------------------------------------------------------------------------------
# Harvard sentences (IEEE 1969, lists 1 and 2), about ten seconds per voice: the length P.862 is made
# for. Two male and two female voices, so that one voice's quirks do not decide.
voices=(
  "male_us|en-us|The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. \
It is easy to tell the depth of a well. These days a chicken leg is a rare dish."
  "female_us|en-us+f3|Rice is often served in round bowls. The juice of lemons makes fine punch. \
The box was thrown beside the parked truck. The hogs were fed chopped corn and garbage."
  "male_gb|en-gb-x-rp|The boy was there when the sun rose. A rod is used to catch pink salmon. \
The source of the huge river is the clear spring. Kick the ball straight and follow through."
  "female_gb|en-gb+f4|Help the woman get back to her feet. A pot of tea helps to pass the evening. \
Smoky fires lack flame and heat. The soft cushion broke the man's fall."
)
voice_files=()
for entry in "${voices[@]}"; do
  IFS='|' read -r name voice text <<<"$entry"
  espeak-ng -v "$voice" -s 160 -w "${name}_22k.wav" "$text"
  # -D: no dither, so that every run scores the same files; -G: no clipping (audio.py sets the level).
  sox -D -G "${name}_22k.wav" -r 48000 "$name.wav"
  voice_files+=("$name.wav")
done
$audio build --voices "${voice_files[@]}" --output microphone48.wav --manifest manifest.json
sox -D microphone48.wav -r 8000 reference8.wav

score() { $audio score --reference reference8.wav --recording "$1" --manifest manifest.json; }

# --- reference lines ---------------------------------------------------------------------------------
echo "quality: reference lines"
sox reference8.wav -e u-law -D g711u.wav
sox -D g711u.wav -e signed-integer -b 16 g711.wav
echo "{\"kind\":\"reference\",\"name\":\"G.711 µ-law alone (sox)\",\"score\":$(score g711.wav)}" >>"$results"
timing=$("$quality" chain --input microphone48.wav --output opus.wav --stages browser-opus)
echo "{\"kind\":\"reference\",\"name\":\"browser Opus alone\",\"score\":$(score opus.wav),\"timing\":$timing}" >>"$results"
"$quality" chain --input microphone48.wav --output opus_ulaw.wav --stages browser-opus,ulaw >/dev/null
echo "{\"kind\":\"reference\",\"name\":\"browser Opus, then µ-law\",\"score\":$(score opus_ulaw.wav)}" >>"$results"
for k in $complexities; do
  timing=$("$quality" chain --input microphone48.wav --output chain_k$k.wav \
    --stages browser-opus,ulaw,gateway-opus --complexity "$k")
  # The same with the encoder told to expect no loss, so that FEC spends nothing: what FEC costs here.
  "$quality" chain --input microphone48.wav --output chain_k${k}_noloss.wav \
    --stages browser-opus,ulaw,gateway-opus --complexity "$k" --expected-loss 0 >/dev/null
  # And with 5 % of the gateway's packets lost on the way to the browser, recovered by FEC or concealed.
  "$quality" chain --input microphone48.wav --output chain_k${k}_loss5.wav \
    --stages browser-opus,ulaw,gateway-opus --complexity "$k" --loss 5 >/dev/null
  echo "{\"kind\":\"chain\",\"k\":$k,\"score\":$(score chain_k$k.wav),\"timing\":$timing,\
\"no_loss_score\":$(score chain_k${k}_noloss.wav),\"loss5_score\":$(score chain_k${k}_loss5.wav)}" >>"$results"
done

# --- the live path -----------------------------------------------------------------------------------
free_ports() { # $1 UDP ports in a row (even start) free for UDP, the first also free for TCP
  "$py" - "$1" <<'EOF'
import socket, sys
count = int(sys.argv[1])
for _ in range(200):
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); probe.bind(("127.0.0.1", 0))
    start = probe.getsockname()[1] & ~1; probe.close()
    if start < 1024 or start + count > 65535: continue
    held = []
    try:
        for port in range(start, start + count):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", port)); held.append(s)
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM); t.bind(("127.0.0.1", start)); held.append(t)
    except OSError:
        continue
    finally:
        for s in held: s.close()
    print(start); break
else:
    sys.exit("no free ports")
EOF
}

# The call's three processes get real-time priority when we may give it: on a busy machine a sender that
# wakes up 50 ms late makes the gateway's jitter buffer stretch the speech, which costs more PESQ than any
# complexity does (the table marks such calls). The codec timings need no priority (see examples/quality.rs).
rt=()
if [ "$(id -u)" = 0 ] && command -v chrt >/dev/null && chrt -r 10 true 2>/dev/null; then rt=(chrt -r 10); fi

sipp_port=$(free_ports 1)
sipp_media=$(free_ports 4)
"${rt[@]}" sipp -sf "$repo/tests/sipp/answer.xml" -i 127.0.0.1 -mi 127.0.0.1 -p "$sipp_port" -mp "$sipp_media" \
  -t u1 -m 1000 -rtp_echo -nostdin -trace_err >sipp.screen 2>sipp.log &
sipp_pid=$!

database="sqlite://$work/callgate.db"
"$callgate" --database "$database" trunk add echo --host 127.0.0.1 --port "$sipp_port" --transport udp >/dev/null
"$callgate" --database "$database" widget add quality --trunk echo --destination 100 \
  --origin https://shop.example >/dev/null
widget=$("$callgate" --database "$database" widget show quality --json |
  "$py" -c 'import json, sys; print(json.load(sys.stdin)["public_id"])')

# Starts `callgate serve` at complexity $1 on fresh ports; sets $gateway (its pid) and $http (its port).
start_gateway() {
  http=$(free_ports 1)
  local sip webrtc rtp
  sip=$(free_ports 1)
  webrtc=$(free_ports 1)
  rtp=$(free_ports 40)
  cat >"callgate_k$1.toml" <<EOF
[http]
listen = "127.0.0.1:$http"
[https]
listen = ""
[sip]
udp_listen = "127.0.0.1:$sip"
tcp_listen = "127.0.0.1:$sip"
options_ping_interval_secs = 0
[media]
public_ip = "127.0.0.1"
bind_ip = "127.0.0.1"
webrtc_port = $webrtc
workers = 1
rtp_port_min = $rtp
rtp_port_max = $((rtp + 39))
opus_complexity = $1
[database]
url = "$database"
[log]
level = "warn"
[demo]
enabled = false
EOF
  "${rt[@]}" "$callgate" serve --config "callgate_k$1.toml" 2>>"callgate_k$1.log" &
  gateway=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$http/readyz" >/dev/null && return
    sleep 0.1
  done
  echo "quality: callgate did not become ready; its log:" >&2
  cat "callgate_k$1.log" >&2
  exit 1
}

for k in $complexities; do
  start_gateway "$k"
  # Calls until $runs of them were undisturbed (see audio.py: the delay did not change in the middle of a
  # voice), at most $max_calls; disturbed calls are kept in the results and shown apart.
  clean=0
  run=0
  while [ "$clean" -lt "$runs" ] && [ "$run" -lt "$max_calls" ]; do
    run=$((run + 1))
    echo "quality: complexity $k, call $run ($clean of $runs undisturbed so far)"
    if call=$("${rt[@]}" "$quality" call --ws "ws://127.0.0.1:$http/ws" --target "sip:$widget@127.0.0.1" \
      --input microphone48.wav --output "live_k${k}_r$run.wav" 2>"call_k${k}_r$run.err"); then
      scored=$(score "live_k${k}_r$run.wav")
      echo "{\"kind\":\"live\",\"k\":$k,\"run\":$run,\"score\":$scored,\"call\":$call}" >>"$results"
      if grep -q '"disturbed": false' <<<"$scored"; then clean=$((clean + 1)); fi
    else
      echo "quality: the call failed: $(cat "call_k${k}_r$run.err")" >&2
      echo "{\"kind\":\"live\",\"k\":$k,\"run\":$run,\"error\":$("$py" -c 'import json, sys; print(json.dumps(sys.stdin.read()))' <"call_k${k}_r$run.err")}" >>"$results"
    fi
    if ! kill -0 "$gateway" 2>/dev/null; then
      # Something else on the machine stopped it (a name-based kill); its metrics are lost with it.
      echo "quality: callgate exited during the call; starting it again" >&2
      wait "$gateway" 2>/dev/null || true
      start_gateway "$k"
    fi
  done
  metrics=$(curl -sf "http://127.0.0.1:$http/metrics" || true)
  sum=$(awk '$1 == "callgate_transcode_frame_seconds_sum" {print $2}' <<<"$metrics")
  count=$(awk '$1 == "callgate_transcode_frame_seconds_count" {print $2}' <<<"$metrics")
  echo "{\"kind\":\"metrics\",\"k\":$k,\"transcode_sum\":${sum:-0},\"transcode_count\":${count:-0}}" >>"$results"
  kill -TERM "$gateway" 2>/dev/null || true
  wait "$gateway" 2>/dev/null || true
  gateway=""
done

$audio table --results "$results"
echo "quality: recordings and results in $work"
