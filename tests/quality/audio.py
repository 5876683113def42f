#!/usr/bin/env python3
"""The speech-quality benchmark's audio side (tests/quality/run.sh runs it).

build: turns synthesized voices (48 kHz mono WAVs) into the microphone file: a noise pre-roll, then
       each voice at -26 dBov active speech level between half-second silences. Writes a manifest with
       each voice's place in the file, in seconds.
score: aligns a recording with the reference (cross-correlation, to remove the round trip), cuts each
       voice out, and scores it with ITU-T P.862 narrowband at 8 kHz (pip `pesq`, MOS-LQO). Prints one
       JSON object. The pre-roll is never scored: a jitter buffer settles during it (TESTING.md saw
       Chromium shift early audio by ~27 ms).
table: prints run.sh's results (one JSON object a line) as Markdown tables.

WAV IO is Python's wave module; numpy does the arithmetic.
"""

import argparse
import json
import sys
import wave

import numpy as np
from pesq import pesq

# P.56-style active speech level the voices are set to: the level P.862 inputs are usually prepared at.
SPEECH_LEVEL_DBOV = -26.0
# Level of the noise pre-roll (a quiet room in front of the microphone).
PREROLL_NOISE_DBOV = -55.0
# Silence around each voice inside its scored segment (P.862 wants some before and after speech).
SEGMENT_PAD_SECS = 0.5
# How far the recording may be shifted against the reference: the round trip and what the gateway
# dropped before the echo answered.
MAX_LAG_SECS = 3.0
# A change of delay inside a voice this large is a jitter buffer stretching or skipping (a frame is 20 ms;
# smaller changes are the alignment's own wobble).
STRETCH_MS = 10.0
# How far each voice may move from the recording-wide shift (a jitter buffer adapting between voices).
SEGMENT_SLACK_SECS = 0.2


def read_wav(path, rate):
    with wave.open(path, "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2 or wav.getframerate() != rate:
            sys.exit(f"{path}: need 16-bit mono at {rate} Hz")
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float64)


def write_wav(path, rate, samples):
    clipped = np.clip(np.round(samples), -32768, 32767).astype("<i2")
    with wave.open(path, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(clipped.tobytes())


def active_level_dbov(samples, rate):
    """The mean power of the 20 ms blocks within 15.9 dB of the loudest quarter: a simple stand-in for
    ITU-T P.56's active speech level, good enough to set synthetic speech to a known level."""
    block = rate // 50
    blocks = samples[: len(samples) // block * block].reshape(-1, block)
    power = np.mean(blocks**2, axis=1) + 1e-9
    threshold = np.percentile(power, 75) / 10 ** (15.9 / 10)
    active = power[power >= threshold]
    return 10 * np.log10(np.mean(active) / 32768.0**2)


def build(args):
    rate = 48000
    rng = np.random.default_rng(862)
    noise_rms = 32768.0 * 10 ** (PREROLL_NOISE_DBOV / 20)
    parts = [rng.normal(0.0, noise_rms, int(args.preroll_secs * rate))]
    position = len(parts[0])
    pad = np.zeros(int(SEGMENT_PAD_SECS * rate))
    segments = []
    for path in args.voices:
        voice = read_wav(path, rate)
        voice *= 10 ** ((SPEECH_LEVEL_DBOV - active_level_dbov(voice, rate)) / 20)
        segment = np.concatenate([pad, voice, pad])
        name = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        segments.append({"name": name, "start_secs": position / rate, "end_secs": (position + len(segment)) / rate})
        parts.append(segment)
        position += len(segment)
    write_wav(args.output, rate, np.concatenate(parts))
    with open(args.manifest, "w") as manifest:
        json.dump({"preroll_secs": args.preroll_secs, "segments": segments}, manifest, indent=1)


def best_lag(reference, recording, low, high):
    """The shift `lag` in [low, high] that best lines recording[n + lag] up with reference[n]."""
    size = 1 << int(np.ceil(np.log2(len(reference) + len(recording))))
    correlation = np.fft.irfft(np.fft.rfft(recording, size) * np.conj(np.fft.rfft(reference, size)), size)
    lags = np.arange(low, high + 1)
    return int(lags[np.argmax(correlation[lags % size])])


def cut(samples, start, length):
    """samples[start:start + length], zero-padded where it falls outside."""
    out = np.zeros(length)
    lo, hi = max(start, 0), min(start + length, len(samples))
    if hi > lo:
        out[lo - start : hi - start] = samples[lo:hi]
    return out


def score(args):
    rate = 8000
    reference = read_wav(args.reference, rate)
    recording = read_wav(args.recording, rate)
    with open(args.manifest) as manifest:
        segments = json.load(manifest)["segments"]
    # Align on speech only: the pre-roll noise correlates with nothing.
    speech_start = int(segments[0]["start_secs"] * rate)
    speech = np.zeros_like(reference)
    speech[speech_start:] = reference[speech_start:]
    max_lag = int(MAX_LAG_SECS * rate)
    lag = best_lag(speech, recording, -max_lag, max_lag)
    slack = int(SEGMENT_SLACK_SECS * rate)
    results = []
    for segment in segments:
        start, end = int(segment["start_secs"] * rate), int(segment["end_secs"] * rate)
        clean = np.zeros_like(reference)
        clean[start:end] = reference[start:end]
        own_lag = best_lag(clean, recording, lag - slack, lag + slack)
        # The delay through each half: when they differ, a jitter buffer stretched or skipped audio in the
        # middle of the speech, which P.862 punishes much more than a constant delay.
        middle = (start + end) // 2
        halves = []
        for lo, hi in ((start, middle), (middle, end)):
            half = np.zeros_like(reference)
            half[lo:hi] = reference[lo:hi]
            halves.append(best_lag(half, recording, own_lag - slack, own_lag + slack))
        degraded = cut(recording, start + own_lag, end - start)
        mos = pesq(rate, reference[start:end], degraded, "nb")
        results.append({
            "name": segment["name"],
            "pesq": round(float(mos), 3),
            "lag_ms": own_lag * 1000 / rate,
            "lag_change_ms": (halves[1] - halves[0]) * 1000 / rate,
        })
    disturbed = any(abs(r["lag_change_ms"]) >= STRETCH_MS for r in results)
    mean = round(float(np.mean([r["pesq"] for r in results])), 3)
    print(json.dumps({"pesq": mean, "disturbed": disturbed, "segments": results}))


def table(args):
    """Prints the results as Markdown: the reference lines, then one row per complexity."""
    with open(args.results) as results:
        rows = [json.loads(line) for line in results if line.strip()]

    def voices(score):
        return " / ".join(f"{s['pesq']:.2f}" for s in score["segments"])

    names = " / ".join(s["name"] for s in rows[0]["score"]["segments"])
    print(f"| reference line | PESQ ({names}) | mean |")
    print("|---|---|---|")
    for row in rows:
        if row["kind"] == "reference":
            print(f"| {row['name']} | {voices(row['score'])} | {row['score']['pesq']:.2f} |")
    print()
    print("| K | live PESQ, median | undisturbed calls | disturbed calls | codecs alone | codecs alone, 5 % loss"
          " | codecs alone, no FEC bits | encode µs | decode + encode µs | codec % of a core | gateway µs/frame |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for chain in (row for row in rows if row["kind"] == "chain"):
        k = chain["k"]
        live = [row for row in rows if row["kind"] == "live" and row["k"] == k]
        clean = [row["score"]["pesq"] for row in live if "score" in row and not row["score"]["disturbed"]]
        disturbed = [run_cell(row) for row in live if "score" not in row or row["score"]["disturbed"]]
        median = f"{np.median(clean):.2f}" if clean else "-"
        timing = chain["timing"]
        codec_us = timing["gateway_decode_us"] + timing["gateway_encode_us"]
        metrics = next((row for row in rows if row["kind"] == "metrics" and row["k"] == k), None)
        frame_us = (f"{metrics['transcode_sum'] / metrics['transcode_count'] * 1e6:.0f}"
                    if metrics and metrics["transcode_count"] else "-")
        print(f"| {k} | {median} | {', '.join(f'{p:.3f}' for p in clean) or '-'} | {', '.join(disturbed) or '-'}"
              f" | {chain['score']['pesq']:.3f} | {chain['loss5_score']['pesq']:.3f}"
              f" | {chain['no_loss_score']['pesq']:.3f}"
              f" | {timing['gateway_encode_us']:.0f} | {codec_us:.0f} | {codec_us * 50 / 1e4:.2f} | {frame_us} |")
    print()
    print("Per voice (" + names + "):")
    print()
    print("| K | codecs alone | live calls (disturbed ones marked †) |")
    print("|---|---|---|")
    for chain in (row for row in rows if row["kind"] == "chain"):
        live = [row for row in rows if row["kind"] == "live" and row["k"] == chain["k"] and "score" in row]
        calls = "; ".join(voices(r["score"]) + (" †" if r["score"]["disturbed"] else "") for r in live)
        print(f"| {chain['k']} | {voices(chain['score'])} | {calls} |")
    print()
    print("A disturbed call is one in which the delay changed by 10 ms or more in the middle of a voice: a jitter"
          " buffer stretched or skipped audio. The worst lateness of the sender's 20 ms clock in that call is in"
          " brackets.")


def run_cell(row):
    """A disturbed or failed call, for the table."""
    if "score" not in row:
        return "failed"
    return f"{row['score']['pesq']:.3f} ({row['call']['max_send_lateness_ms']:.0f} ms)"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    build_args = commands.add_parser("build", help="make the microphone file and its manifest")
    build_args.add_argument("--voices", nargs="+", required=True, help="48 kHz mono WAVs, one per voice")
    build_args.add_argument("--preroll-secs", type=float, default=3.0)
    build_args.add_argument("--output", required=True, help="the microphone file (48 kHz)")
    build_args.add_argument("--manifest", required=True)
    score_args = commands.add_parser("score", help="align a recording and score each voice")
    score_args.add_argument("--reference", required=True, help="the microphone file at 8 kHz")
    score_args.add_argument("--recording", required=True, help="what came back, 8 kHz")
    score_args.add_argument("--manifest", required=True)
    table_args = commands.add_parser("table", help="print run.sh's results as Markdown tables")
    table_args.add_argument("--results", required=True, help="results.jsonl written by run.sh")
    args = parser.parse_args()
    {"build": build, "score": score, "table": table}[args.command](args)


if __name__ == "__main__":
    main()
