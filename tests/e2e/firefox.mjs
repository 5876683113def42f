// A real call from headless Firefox (Debian firefox-esr) through the gateway's /demo page to the built-in
// echo endpoint: the widget's JsSIP over SIP-over-WebSocket, WebRTC with Firefox's own ICE, DTLS and Opus,
// and Firefox's fake microphone (a 1 kHz tone) found again in what comes back. The INVITE's offer must have
// the shape of tests/fixtures/sdp/browser/firefox_offer.sdp. Firefox is driven over WebDriver BiDi with the
// few commands below (the Playwright of widget/ needs a newer Firefox than ESR). Run by ./firefox.sh:
//
//   CALLGATE_BIN=… node --test tests/e2e/firefox.mjs
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitUntil } from '../../widget/tests/gateway.mjs';
import { spectrumPeak, toneMatches } from '../../widget/tests/tone.mjs';
import { RECORD_WEBSOCKET_FRAMES, assertOfferLike, inviteBody, startDemoGateway } from './offers.mjs';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
// The WebSocket client Playwright bundles; Node 20 has none of its own.
const { ws: WebSocket } = createRequire(join(repo, 'widget/package.json'))('playwright-core/lib/utilsBundle');
const FIREFOX = process.env.FIREFOX || '/usr/bin/firefox-esr';
/** FIREFOX_TRACE=1 prints the BiDi commands and replies. */
const TRACE = Boolean(process.env.FIREFOX_TRACE);
/** The tone of Firefox's fake microphone (media.navigator.streams.fake). */
const FAKE_TONE_HZ = 1000;
const WRONG_HZ = 440;

// A fake microphone granted by permission: without a granted permission Firefox gathers ICE candidates only
// on the default route's address, which a loopback-only namespace does not have. Loopback candidates with
// their addresses (no mDNS names), audio that plays without a gesture, and nothing that calls home.
const PREFS = {
  'media.navigator.streams.fake': true,
  'permissions.default.microphone': 1,
  'media.peerconnection.ice.loopback': true,
  'media.peerconnection.ice.obfuscate_host_addresses': false,
  'media.autoplay.default': 0,
  'media.autoplay.blocking_policy': 0,
  'media.cubeb.force_null_context': true,
  'app.update.enabled': false,
  'browser.shell.checkDefaultBrowser': false,
  'datareporting.policy.dataSubmissionEnabled': false,
  'toolkit.telemetry.enabled': false,
  'network.captive-portal-service.enabled': false,
  'network.connectivity-service.enabled': false,
  'network.proxy.type': 0,
};

/** One headless Firefox with a fresh profile, and a WebDriver BiDi session on its only tab. */
class Firefox {
  static async launch() {
    const firefox = new Firefox();
    firefox.profile = mkdtempSync(join(tmpdir(), 'callgate-firefox-'));
    writeFileSync(join(firefox.profile, 'user.js'),
      Object.entries(PREFS).map(([name, value]) => `user_pref(${JSON.stringify(name)}, ${JSON.stringify(value)});\n`)
        .join(''));
    firefox.child = spawn(FIREFOX, ['--headless', '--no-remote', '--profile', firefox.profile,
      '--remote-debugging-port', '0', 'about:blank'], { stdio: ['ignore', 'ignore', 'pipe'] });
    firefox.log = '';
    let timer;
    const url = await new Promise((resolveUrl, reject) => {
      firefox.child.stderr.on('data', (chunk) => {
        firefox.log += chunk;
        const found = /WebDriver BiDi listening on (ws:\/\/\S+)/.exec(firefox.log);
        if (found) resolveUrl(found[1]);
      });
      firefox.child.once('exit', (code) => reject(new Error(`firefox exited ${code}:\n${firefox.log}`)));
      timer = setTimeout(() => reject(new Error(`firefox did not start BiDi:\n${firefox.log}`)), 30000);
    }).finally(() => clearTimeout(timer));
    firefox.socket = new WebSocket(`${url}/session`);
    firefox.replies = new Map();
    firefox.nextId = 1;
    firefox.socket.on('message', (data) => {
      const message = JSON.parse(data.toString());
      if (TRACE) console.log(`# <- ${JSON.stringify(message).slice(0, 300)}`);
      const reply = firefox.replies.get(message.id);
      if (!reply) return;
      firefox.replies.delete(message.id);
      if (message.type === 'error') reply.reject(new Error(`${message.error}: ${message.message}`));
      else reply.resolve(message.result);
    });
    await new Promise((opened, failed) => {
      firefox.socket.once('open', opened);
      firefox.socket.once('error', failed);
    });
    await firefox.send('session.new', { capabilities: {} });
    const tree = await firefox.send('browsingContext.getTree', {});
    firefox.context = tree.contexts[0].context;
    return firefox;
  }

  send(method, params) {
    const id = this.nextId;
    this.nextId += 1;
    return new Promise((resolveReply, reject) => {
      this.replies.set(id, { resolve: resolveReply, reject });
      if (TRACE) console.log(`# -> ${method} ${JSON.stringify(params)}`);
      this.socket.send(JSON.stringify({ id, method, params }));
    });
  }

  /** Opens `url` once `preload` (a function) is set to run first in every page, and waits for its load. */
  async open(url, preload) {
    await this.send('script.addPreloadScript', { functionDeclaration: preload.toString() });
    await this.send('browsingContext.navigate', { context: this.context, url, wait: 'complete' });
  }

  /** Like Playwright's page.evaluate for JSON results: `fn(arg)` in the page, awaited. */
  async evaluate(fn, arg) {
    const expression = `Promise.resolve((${fn})(${JSON.stringify(arg)}))`
      + '.then((value) => JSON.stringify(value === undefined ? null : value))';
    const outcome = await this.send('script.evaluate', {
      expression, target: { context: this.context }, awaitPromise: true,
    });
    if (outcome.type !== 'success') throw new Error(`in the page: ${JSON.stringify(outcome.exceptionDetails)}`);
    return JSON.parse(outcome.result.value);
  }

  async close() {
    try {
      // Not close(): that waits up to 30 s for a closing handshake from a browser about to be killed.
      this.socket?.terminate();
    } finally {
      this.child.kill('SIGKILL');
      rmSync(this.profile, { recursive: true, force: true });
    }
  }
}

/**
 * The spectrum of the widget's remote stream as tone.mjs's measureRemoteSpectrum gives it, measured another
 * way: headless Firefox has no audio output, so an AudioContext never leaves `suspended`. MediaRecorder
 * records `durationMs` of the stream, an OfflineAudioContext decodes it, and the last 32768 samples go
 * through a Blackman window and an FFT, scaled like AnalyserNode's dB (a full-scale sine is 0 dB).
 */
async function recordedRemoteSpectrum(firefox, durationMs = 2000) {
  const spectrum = await firefox.evaluate(async (duration) => {
    const stream = window.callgateWidget.remoteStream;
    if (!stream) return null;
    const recorder = new MediaRecorder(stream);
    const chunks = [];
    recorder.ondataavailable = (event) => chunks.push(event.data);
    const stopped = new Promise((done) => { recorder.onstop = done; });
    recorder.start();
    await new Promise((done) => setTimeout(done, duration));
    recorder.stop();
    await stopped;
    const decoded = await new OfflineAudioContext(1, 1, 48000)
      .decodeAudioData(await new Blob(chunks).arrayBuffer());
    const size = 32768;
    const samples = decoded.getChannelData(0);
    if (samples.length < size) return { sampleRate: decoded.sampleRate, fftSize: size, frames: 0, spectrumDb: [] };
    const re = new Float64Array(size);
    const im = new Float64Array(size);
    let windowSum = 0;
    for (let i = 0; i < size; i += 1) {
      const phase = (2 * Math.PI * i) / (size - 1);
      const weight = 0.42 - 0.5 * Math.cos(phase) + 0.08 * Math.cos(2 * phase);
      re[i] = samples[samples.length - size + i] * weight;
      windowSum += weight;
    }
    // In-place radix-2 FFT: bit-reversal permutation, then butterflies.
    for (let i = 1, j = 0; i < size; i += 1) {
      let bit = size >> 1;
      for (; j & bit; bit >>= 1) j ^= bit;
      j ^= bit;
      if (i < j) {
        [re[i], re[j]] = [re[j], re[i]];
        [im[i], im[j]] = [im[j], im[i]];
      }
    }
    for (let length = 2; length <= size; length <<= 1) {
      const angle = (-2 * Math.PI) / length;
      for (let start = 0; start < size; start += length) {
        for (let k = 0; k < length / 2; k += 1) {
          const [wr, wi] = [Math.cos(angle * k), Math.sin(angle * k)];
          const [a, b] = [start + k, start + k + length / 2];
          const tr = re[b] * wr - im[b] * wi;
          const ti = re[b] * wi + im[b] * wr;
          [re[b], im[b]] = [re[a] - tr, im[a] - ti];
          [re[a], im[a]] = [re[a] + tr, im[a] + ti];
        }
      }
    }
    const spectrumDb = [];
    for (let bin = 0; bin < size / 2; bin += 1) {
      spectrumDb.push(20 * Math.log10((2 * Math.hypot(re[bin], im[bin])) / windowSum));
    }
    return { sampleRate: decoded.sampleRate, fftSize: size, frames: 1, spectrumDb };
  }, durationMs);
  // JSON has no -Infinity (a silent bin): it arrives as null.
  if (spectrum) spectrum.spectrumDb = spectrum.spectrumDb.map((db) => db ?? -Infinity);
  return spectrum;
}

const widgetState = (firefox) => firefox.evaluate(() => window.callgateWidget && window.callgateWidget.state);
const press = (firefox, selector) => firefox.evaluate(
  (sel) => document.querySelector('callgate-widget').shadowRoot.querySelector(sel).click(), selector);
const waitForState = (firefox, state) => waitUntil(async () => (await widgetState(firefox)) === state,
  `the widget to be ${state}`, 15000);

let gateway;

before(async () => {
  gateway = await startDemoGateway('firefox');
});

after(async () => {
  if (gateway) await gateway.stopAndClean();
});

test('Firefox calls the echo endpoint behind /demo and hears its microphone back', async () => {
  const firefox = await Firefox.launch();
  const logStart = gateway.logText().length;
  try {
    await firefox.open(`${gateway.origin}/demo`, RECORD_WEBSOCKET_FRAMES);
    await waitUntil(async () => (await widgetState(firefox)) === 'idle', 'the widget to mount');
    await press(firefox, '.call');
    await waitForState(firefox, 'in-call');
    await waitUntil(() => firefox.evaluate(() => window.callgateWidget.remoteStream !== null), 'the remote stream');

    const spectrum = await recordedRemoteSpectrum(firefox);
    assert.ok(spectrum, 'the widget has a remote stream');
    const peak = spectrumPeak(spectrum);
    console.log(`# Firefox echo through the demo endpoint: peak ${peak.hz.toFixed(1)} Hz at ${peak.db.toFixed(1)} dB, `
      + `band median ${peak.medianDb.toFixed(1)} dB, ${spectrum.frames} frames`);
    assert.ok(toneMatches(peak, FAKE_TONE_HZ), `expected ${FAKE_TONE_HZ} ± 5 Hz, measured ${JSON.stringify(peak)}`);
    assert.equal(toneMatches(peak, WRONG_HZ), false);

    const sent = inviteBody(await firefox.evaluate(() => window.sentFrames));
    assert.ok(sent, 'JsSIP sent an INVITE');
    assertOfferLike(assert, sent, 'firefox_offer.sdp');

    await press(firefox, '.hangup');
    await waitForState(firefox, 'ended');
  } catch (error) {
    process.stderr.write(`--- callgate log during the test ---\n${gateway.logText().slice(logStart)}\n`);
    throw error;
  } finally {
    await firefox.close();
  }
});
