// Unit tests of the end-to-end test's own checks, on made-up input: the tone checker and the RFC 4733 event
// counter must reject what they are there to catch.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dtmfDigits, parseRtp } from './gateway.mjs';
import { spectrumPeak, toneMatches } from './tone.mjs';

const SAMPLE_RATE = 48000;
const FFT_SIZE = 32768;
const BIN_HZ = SAMPLE_RATE / FFT_SIZE;

/** A spectrum with a noise floor at `floorDb` and, when `toneHz` is given, a peak there `toneDb` loud. */
function spectrum({ toneHz = null, toneDb = -30, floorDb = -100 }) {
  const spectrumDb = Array.from({ length: FFT_SIZE / 2 }, (_, bin) => floorDb + 3 * Math.sin(bin));
  if (toneHz !== null) {
    const centre = toneHz / BIN_HZ;
    // A window's main lobe: a parabola in dB around the exact frequency, three bins wide.
    for (let bin = Math.floor(centre) - 1; bin <= Math.ceil(centre) + 1; bin += 1) {
      spectrumDb[bin] = Math.max(spectrumDb[bin], toneDb - 6 * (bin - centre) ** 2);
    }
  }
  return { sampleRate: SAMPLE_RATE, fftSize: FFT_SIZE, spectrumDb };
}

test('a 440 Hz tone is found to a fraction of a bin, and only at 440 Hz', () => {
  const peak = spectrumPeak(spectrum({ toneHz: 441 }));
  assert.ok(Math.abs(peak.hz - 441) < 0.2, `peak at ${peak.hz}`);
  assert.ok(toneMatches(peak, 440));
  assert.ok(toneMatches(peak, 445));
  assert.equal(toneMatches(peak, 435), false);
  assert.equal(toneMatches(peak, 1000), false);
});

test('silence, noise and a tone too faint above the noise are not a tone', () => {
  const silence = spectrum({ floorDb: -Infinity });
  assert.equal(toneMatches(spectrumPeak(silence), 440), false);
  assert.equal(toneMatches(spectrumPeak(spectrum({})), 440), false, 'noise alone');
  assert.equal(toneMatches(spectrumPeak(spectrum({ toneHz: 440, toneDb: -85, floorDb: -140 })), 440), false,
    'too quiet');
  assert.equal(toneMatches(spectrumPeak(spectrum({ toneHz: 440, toneDb: -50, floorDb: -60 })), 440), false,
    'buried in noise');
});

test('a tone outside the telephone band is not searched for', () => {
  const peak = spectrumPeak(spectrum({ toneHz: 6000, toneDb: -10 }));
  assert.ok(peak.hz < 3800);
  assert.equal(toneMatches(peak, 6000), false);
});

/** An RTP packet: version 2, `payloadType`, and a 4-byte RFC 4733 payload for `event`. */
function eventPacket({ sequence, timestamp, event, end = false, duration = 160, payloadType = 101 }) {
  const bytes = Buffer.alloc(16);
  bytes[0] = 0x80;
  bytes[1] = payloadType;
  bytes.writeUInt16BE(sequence, 2);
  bytes.writeUInt32BE(timestamp, 4);
  bytes.writeUInt32BE(0x1234, 8);
  bytes[12] = event;
  bytes[13] = (end ? 0x80 : 0) | 10;
  bytes.writeUInt16BE(duration, 14);
  return bytes;
}

test('RFC 4733 packets are counted once per event, whatever the repeats', () => {
  const packets = [];
  let sequence = 1;
  const send = (timestamp, event) => {
    for (let i = 0; i < 4; i += 1) packets.push(eventPacket({ sequence: sequence++, timestamp, event }));
    // the end packet, sent three times (RFC 4733 §2.5.1.4)
    for (let i = 0; i < 3; i += 1) packets.push(eventPacket({ sequence: sequence++, timestamp, event, end: true }));
  };
  send(1000, 1);
  send(3000, 11);
  send(5000, 11); // the same key pressed again is a new event
  send(7000, 10);
  const parsed = packets.map(parseRtp);
  assert.equal(dtmfDigits(parsed, 101), '1##*');
  assert.equal(dtmfDigits(parsed, 96), '', 'another payload type is not telephone-event');

  // A digit sent twice by the gateway (a new timestamp for the same press) shows up twice.
  send(9000, 5);
  send(9480, 5);
  assert.equal(dtmfDigits(packets.map(parseRtp), 101), '1##*55');
});

test('parseRtp rejects what is not RTP', () => {
  assert.equal(parseRtp(Buffer.from('STUN or junk')), null);
  assert.equal(parseRtp(Buffer.alloc(8)), null);
  const packet = parseRtp(eventPacket({ sequence: 7, timestamp: 42, event: 3, payloadType: 101 }));
  assert.deepEqual({ ...packet, payload: [...packet.payload] },
    { marker: false, payloadType: 101, sequence: 7, timestamp: 42, ssrc: 0x1234, payload: [3, 10, 0, 160] });
});
