// The end-to-end test: real calls from headless Chromium through the real gateway. The Debian Chromium,
// driven by playwright-core, with a fake microphone playing a 440 Hz tone, loads a host page on one origin
// that embeds the widget from `callgate serve` on another; the call goes over SIP-over-WebSocket and
// WebRTC to the gateway, then SIP/RTP (G.711) to SIPp as the PBX or to the built-in echo endpoint, and the
// echoed tone is found again in the widget's remote stream. Also: hang-up from either side, DTMF from the
// keypad arriving as RFC 4733 events, busy, microphone denied, a refused origin, and a screenshot of each
// widget state in ARTIFACTS. Run by ../../tests/e2e/run.sh inside a loopback-only network namespace:
//
//   CALLGATE_BIN=… TONE_WAV=… ARTIFACTS=… node --test tests/e2e.mjs
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  Browsers, FAKE_MICROPHONE, liveText, openWidgetPage, screenshotWidget, shadow, waitForState, widgetHistory,
} from './browser.mjs';
import { Gateway, Sipp, dtmfDigits, listenRtp, sleep, startSite, waitUntil, freePorts } from './gateway.mjs';
import { measureRemoteSpectrum, spectrumPeak, toneMatches } from './tone.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../..');
const ARTIFACTS = resolve(process.env.ARTIFACTS || join(repo, 'tests/artifacts/e2e'));
const BINARY = process.env.CALLGATE_BIN || join(repo, 'target/debug/callgate');
const TONE_WAV = process.env.TONE_WAV;
const TONE_HZ = 440;
const WRONG_HZ = 1000;
/** The telephone-event payload type the gateway offers and SIPp's record_dtmf.xml answers with. */
const TELEPHONE_EVENT_PT = 101;
mkdirSync(ARTIFACTS, { recursive: true });
assert.ok(TONE_WAV, 'TONE_WAV must name the fake microphone file (a 440 Hz WAV)');

// The tone file plays (looping) as the microphone; loopback candidates let ICE pair 127.0.0.1 with itself.
const CALL_FLAGS = [
  ...FAKE_MICROPHONE, `--use-file-for-fake-audio-capture=${TONE_WAV}`, '--allow-loopback-in-peer-connection',
];

const work = mkdtempSync(join(tmpdir(), 'callgate-e2e-'));
const browsers = new Browsers();
let site;
let gateway;
let pbxPort;
let siteWidget;
let sippRuns = 0;

before(async () => {
  site = await startSite();
  pbxPort = await freePorts(1);
  gateway = await Gateway.start({
    binary: BINARY, directory: join(work, 'gateway'), pbxPort, origins: [site.allowedOrigin],
  });
  siteWidget = gateway.widgetId('site');
});

after(async () => {
  if (gateway) {
    await gateway.stop();
    copyFileSync(gateway.logPath, join(ARTIFACTS, 'callgate.log'));
  }
  if (site) await site.close();
  browsers.removeProfiles();
  // E2E_KEEP=1 keeps the gateway's directory and SIPp's traces for a look afterwards.
  if (process.env.E2E_KEEP) console.log(`# kept ${work}`);
  else rmSync(work, { recursive: true, force: true });
});

/** SIPp running `name`.xml (tests/sipp, or tests/e2e/sipp for the scenarios only this test uses) as the PBX. */
function startPbx(name, options = {}) {
  sippRuns += 1;
  const shared = join(repo, 'tests/sipp', `${name}.xml`);
  const own = join(repo, 'tests/e2e/sipp', `${name}.xml`);
  return Sipp.start({
    scenario: name === 'ring_after_pause' ? own : shared,
    port: pbxPort,
    directory: join(work, `sipp-${sippRuns}-${name}`),
    ...options,
  });
}

/**
 * Runs `body` with a fresh browser (`flags`); on failure prints what the gateway logged meanwhile and the
 * traces of SIPp (`peers.sipp`, set by the body), then fails.
 */
async function withBrowser(flags, body) {
  const context = await browsers.launch(flags);
  const logStart = gateway.logText().length;
  const peers = { sipp: null };
  try {
    await body(context, peers);
  } catch (error) {
    process.stderr.write(`--- callgate log during the test ---\n${gateway.logText().slice(logStart)}\n`);
    if (peers.sipp) process.stderr.write(peers.sipp.traces());
    throw error;
  } finally {
    if (peers.sipp) await peers.sipp.kill();
    await context.close();
  }
}

/** The shop's page embedding `widget` from the gateway, opened on `origin` (the allowed one by default). */
function openShop(context, { origin = site.allowedOrigin, widget = siteWidget } = {}) {
  const query = new URLSearchParams({ widget, gateway: gateway.origin });
  return openWidgetPage(context, `${origin}/?${query}`);
}

const screenshot = (page, name) => screenshotWidget(page, ARTIFACTS, name);
const press = (page, selector) => page.locator(`callgate-widget ${selector}`).click();

/** Measures the remote stream and returns its peak, logged for the record. */
async function remotePeak(page, what) {
  const spectrum = await measureRemoteSpectrum(page);
  assert.ok(spectrum, 'the widget has a remote stream');
  const peak = spectrumPeak(spectrum);
  console.log(`# ${what}: peak ${peak.hz.toFixed(1)} Hz at ${peak.db.toFixed(1)} dB, `
    + `band median ${peak.medianDb.toFixed(1)} dB, ${spectrum.frames} frames`);
  return peak;
}

/** Clicks the call button and waits until the call is answered and the far end's audio is attached. */
async function callAndWaitForAnswer(page) {
  await press(page, '.call');
  await waitForState(page, 'in-call');
  await page.waitForFunction(() => window.callgateWidget.remoteStream !== null);
}

/** The newest call record (`callgate calls list --json`). */
// The newest call record, once its end is written: the gateway completes it after the media engine has
// reported the call's statistics, a moment after the hang-up.
function lastCall() {
  const deadline = Date.now() + 5000;
  for (;;) {
    const calls = JSON.parse(gateway.cli(['calls', 'list', '--json']));
    const newest = calls.reduce((found, call) => (found === null || call.id > found.id ? call : found), null);
    if ((newest !== null && newest.ended_at) || Date.now() > deadline) return newest;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
  }
}

test('a call through the gateway to SIPp echoes the 440 Hz tone; hang-up from the widget sends BYE', async () => {
  await withBrowser(CALL_FLAGS, async (context, peers) => {
    peers.sipp = await startPbx('answer', { rtpEcho: true });
    const page = await openShop(context);
    await page.screenshot({ path: join(ARTIFACTS, 'page-idle.png') });
    await screenshot(page, 'idle');

    await callAndWaitForAnswer(page);
    const peak = await remotePeak(page, 'echo through SIPp');
    assert.ok(toneMatches(peak, TONE_HZ), `expected ${TONE_HZ} ± 5 Hz, measured ${JSON.stringify(peak)}`);
    // The same measurement must not pass for another frequency, or the check above proves nothing.
    assert.equal(toneMatches(peak, WRONG_HZ), false, `the checker accepted ${WRONG_HZ} Hz for ${peak.hz} Hz`);

    assert.equal(await shadow(page, '.keypad', 'return element.hidden;'), false, 'the keypad shows in a call');
    assert.equal(await shadow(page, '.timer', 'return element.hidden;'), false, 'the call timer shows');
    await sleep(1100); // let the timer tick past 00:00 for the screenshot
    await screenshot(page, 'in-call');

    // Muted, the tone is gone from what comes back: the measured audio really went through the call.
    await press(page, '.mute');
    assert.equal(await shadow(page, '.mute', 'return element.getAttribute("aria-pressed");'), 'true');
    await sleep(1000);
    const muted = await remotePeak(page, 'muted');
    assert.equal(toneMatches(muted, TONE_HZ), false, `the tone came back while muted: ${JSON.stringify(muted)}`);
    await screenshot(page, 'in-call-muted');
    await press(page, '.mute');
    await sleep(1000);
    const unmuted = await remotePeak(page, 'unmuted');
    assert.ok(toneMatches(unmuted, TONE_HZ), `the tone did not come back: ${JSON.stringify(unmuted)}`);

    await press(page, '.hangup');
    await waitForState(page, 'ended');
    assert.equal(await liveText(page), 'Call ended');
    await screenshot(page, 'ended');
    assert.equal(await peers.sipp.finished(), 0, 'SIPp got the BYE and ended its call');
    const history = await widgetHistory(page);
    assert.deepEqual(history.slice(-2), ['in-call', 'ended'], `history ${history}`);
    assert.deepEqual(page.widgetErrors, []);

    const call = lastCall();
    assert.equal(call.widget, 'site');
    assert.equal(call.ended_by, 'browser', JSON.stringify(call));
    assert.equal(call.pbx.final_status, 200, JSON.stringify(call));
    assert.equal(call.pbx.codec, 'pcmu', JSON.stringify(call));
    assert.equal(call.browser.codec, 'opus', JSON.stringify(call));
    assert.ok(call.pbx.packets_received > 50, JSON.stringify(call));
  });
});

test('the PBX hangs up: the widget shows the call ended', async () => {
  await withBrowser(CALL_FLAGS, async (context, peers) => {
    peers.sipp = await startPbx('pbx_hangup', { rtpEcho: true, pause: 2500 });
    const page = await openShop(context);
    await callAndWaitForAnswer(page);
    await waitForState(page, 'ended', 20000);
    assert.equal(await liveText(page), 'Call ended');
    assert.equal(await shadow(page, '.again', 'return element.hidden;'), false, '"Call again" is offered');
    await screenshot(page, 'ended-by-pbx');
    assert.equal(await peers.sipp.finished(), 0, 'SIPp got the 200 OK to its BYE');
    const call = lastCall();
    assert.equal(call.ended_by, 'pbx', JSON.stringify(call));
  });
});

test('the built-in echo endpoint behind /demo echoes the tone', async () => {
  await withBrowser(CALL_FLAGS, async (context) => {
    const page = await openWidgetPage(context, `${gateway.origin}/demo`);
    assert.equal(await page.evaluate(() => window.callgateWidget.publicId), gateway.widgetId('demo'));
    await page.screenshot({ path: join(ARTIFACTS, 'demo-page.png') });
    await callAndWaitForAnswer(page);
    const peak = await remotePeak(page, 'echo through the demo endpoint');
    assert.ok(toneMatches(peak, TONE_HZ), `expected ${TONE_HZ} ± 5 Hz, measured ${JSON.stringify(peak)}`);
    assert.equal(toneMatches(peak, WRONG_HZ), false);
    await screenshot(page, 'demo-in-call');
    await press(page, '.hangup');
    await waitForState(page, 'ended');
    const call = lastCall();
    assert.equal(call.widget, 'demo');
    assert.equal(call.ended_by, 'browser', JSON.stringify(call));
  });
});

test('keypad digits reach the PBX as RFC 4733 events, each once', async () => {
  const rtp = await listenRtp();
  try {
    await withBrowser(CALL_FLAGS, async (context, peers) => {
      peers.sipp = await startPbx('record_dtmf', { keys: { rtp_port: rtp.port } });
      const page = await openShop(context);
      await callAndWaitForAnswer(page);
      await waitUntil(() => rtp.packets.length > 10, 'audio at the PBX media port');
      const digits = '159*0#';
      for (const digit of digits) {
        await press(page, `.key[data-key="${digit}"]`);
        await sleep(300);
      }
      assert.equal(await shadow(page, '.dialed', 'return element.textContent;'), digits);
      await screenshot(page, 'in-call-keypad');
      await waitUntil(() => dtmfDigits(rtp.packets, TELEPHONE_EVENT_PT).length >= digits.length,
        `${digits.length} telephone events`, 5000);
      await sleep(500); // time for a duplicate event to show up, if the gateway sent one
      const events = rtp.packets.filter((packet) => packet.payloadType === TELEPHONE_EVENT_PT);
      assert.equal(dtmfDigits(rtp.packets, TELEPHONE_EVENT_PT), digits,
        `events: ${events.map((p) => `${p.timestamp}:${p.payload[0]}${p.payload[1] & 0x80 ? 'E' : ''}`)}`);
      assert.ok(events.every((packet) => packet.payload[1] & 0x80 ? true : packet.payload.length === 4));
      assert.ok(events.some((packet) => packet.payload[1] & 0x80), 'events carry their end bit');

      await press(page, '.hangup');
      await waitForState(page, 'ended');
      assert.equal(await peers.sipp.finished(), 0, 'SIPp got the BYE');
    });
  } finally {
    await rtp.close();
  }
});

test('connecting, then ringing, then the caller gives up (CANCEL)', async () => {
  await withBrowser(CALL_FLAGS, async (context, peers) => {
    peers.sipp = await startPbx('ring_after_pause', { pause: 2000 });
    const page = await openShop(context);
    await press(page, '.call');
    await page.waitForFunction(() => window.callgateWidget.state === 'connecting'
      && window.callgateWidget.message === 'Connecting…');
    await sleep(500);
    assert.equal(await liveText(page), 'Connecting…');
    await screenshot(page, 'connecting');
    await waitForState(page, 'ringing');
    assert.equal(await liveText(page), 'Ringing…');
    await screenshot(page, 'ringing');
    await press(page, '.hangup');
    await waitForState(page, 'ended');
    assert.equal(await peers.sipp.finished(), 0, 'SIPp got the CANCEL and the ACK of its 487');
  });
});

test('a busy PBX: the widget says the line is busy', async () => {
  await withBrowser(CALL_FLAGS, async (context, peers) => {
    peers.sipp = await startPbx('busy_486');
    const page = await openShop(context);
    await press(page, '.call');
    await waitForState(page, 'busy');
    assert.equal(await liveText(page), 'The line is busy. Please try again later.');
    await screenshot(page, 'busy');
    assert.equal(await peers.sipp.finished(), 0, 'SIPp got the ACK of its 486');
  });
});

test('microphone denied: the widget says so and places no call', async () => {
  // No fake-UI flag and no granted permission: Chromium refuses the microphone.
  await withBrowser(['--use-fake-device-for-media-stream'], async (context) => {
    await context.clearPermissions();
    const callsBefore = JSON.parse(gateway.cli(['calls', 'list', '--json'])).length;
    const page = await openShop(context);
    await press(page, '.call');
    await waitForState(page, 'mic-denied');
    assert.match(await liveText(page), /^Microphone access was denied\. Allow the microphone/);
    await screenshot(page, 'mic-denied');
    await sleep(300);
    assert.equal(JSON.parse(gateway.cli(['calls', 'list', '--json'])).length, callsBefore);
  });
});

test('a page on an origin the widget does not allow is refused, and the widget says so', async () => {
  await withBrowser(CALL_FLAGS, async (context) => {
    const page = await openShop(context, { origin: site.otherOrigin });
    await press(page, '.call');
    await waitForState(page, 'refused');
    assert.equal(await liveText(page), 'Calls are not available right now.');
    assert.equal(await shadow(page, '.status', 'return element.textContent;'), 'Calls are not available right now');
    await screenshot(page, 'refused');
    const refusal = gateway.logText().split('\n').find((line) => line.includes('call refused'));
    assert.ok(refusal && refusal.includes(`origin="${site.otherOrigin}"`)
      && refusal.includes('reason="origin_not_allowed"'), `the gateway's refusal: ${refusal}`);
  });
});
