// Interop with SIP.js, the other SIP-over-WebSocket library websites use: a page with its own SIP.js 0.21
// softphone (sipjs/page.mjs, bundled here with esbuild) in headless Chromium calls a callgate widget through
// the real gateway to SIPp echoing the audio. SIP.js writes its messages differently from JsSIP (Via
// `SIP/2.0/WSS` with an `.invalid` host even over ws://, its own Contact and tags), so this checks that the
// gateway answers it over the same WebSocket, that the echoed 440 Hz tone comes back, and that a BYE from
// either side ends both legs with the right call record. Run by ../../tests/e2e/run.sh (loopback-only
// network namespace):
//
//   CALLGATE_BIN=… TONE_WAV=… node --test tests/e2e-sipjs.mjs
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Browsers, FAKE_MICROPHONE } from './browser.mjs';
import { Gateway, Sipp, freePorts } from './gateway.mjs';
import { measureRemoteSpectrum, spectrumPeak, toneMatches } from './tone.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../..');
const BINARY = process.env.CALLGATE_BIN || join(repo, 'target/debug/callgate');
const TONE_WAV = process.env.TONE_WAV;
const TONE_HZ = 440;
const WRONG_HZ = 1000;
assert.ok(TONE_WAV, 'TONE_WAV must name the fake microphone file (a 440 Hz WAV)');

const CALL_FLAGS = [
  ...FAKE_MICROPHONE, `--use-file-for-fake-audio-capture=${TONE_WAV}`, '--allow-loopback-in-peer-connection',
];

const work = mkdtempSync(join(tmpdir(), 'callgate-e2e-sipjs-'));
const browsers = new Browsers();
let site;
let gateway;
let pbxPort;
let widget;
let sippRuns = 0;

/** Bundles the SIP.js page from widget/node_modules (esbuild and sip.js are installed by npm ci). */
async function bundlePage() {
  const require = createRequire(join(here, '..', 'package.json'));
  const esbuild = require('esbuild');
  const outfile = join(work, 'sipjs-page.js');
  await esbuild.build({
    entryPoints: [join(here, 'sipjs', 'page.mjs')],
    outfile,
    bundle: true,
    format: 'iife',
    platform: 'browser',
    target: 'es2019',
    logLevel: 'warning',
  });
  return readFileSync(outfile);
}

/** The website serving the SIP.js page and its script on 127.0.0.1 (reached as http://localhost:PORT). */
async function startSipjsSite(script) {
  const server = createServer((request, response) => {
    if (request.url === '/sipjs-page.js') {
      response.writeHead(200, { 'content-type': 'text/javascript' });
      response.end(script);
      return;
    }
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    response.end('<!doctype html><html lang="en"><head><meta charset="utf-8"><title>SIP.js shop</title></head>'
      + '<body><h1>A shop with its own SIP.js phone</h1><script src="/sipjs-page.js"></script></body></html>');
  });
  await new Promise((done) => server.listen(0, '127.0.0.1', done));
  const { port } = server.address();
  return {
    origin: `http://localhost:${port}`,
    close: () => new Promise((done) => server.close(done)),
  };
}

before(async () => {
  site = await startSipjsSite(await bundlePage());
  pbxPort = await freePorts(1);
  gateway = await Gateway.start({
    binary: BINARY, directory: join(work, 'gateway'), pbxPort, origins: [site.origin],
  });
  widget = gateway.widgetId('site');
});

after(async () => {
  if (gateway) await gateway.stop();
  if (site) await site.close();
  browsers.removeProfiles();
  rmSync(work, { recursive: true, force: true });
});

/** A page of the SIP.js site in a fresh browser, calling the widget; resolves once the call is established. */
async function placeCall(context) {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto(`${site.origin}/`);
  await page.waitForFunction(() => typeof window.startCall === 'function');
  const ws = gateway.origin.replace(/^http/, 'ws');
  await page.evaluate(([server, target]) => { window.startCall(server, target); },
    [`${ws}/ws`, `sip:${widget}@127.0.0.1`]);
  await page.waitForFunction(() => window.sipjsCall.state === 'Established' || window.sipjsCall.error !== null
    || window.sipjsCall.state === 'Terminated', null, { timeout: 15000 });
  const call = await page.evaluate(() => ({ state: window.sipjsCall.state, error: window.sipjsCall.error }));
  assert.equal(call.state, 'Established', `SIP.js call: ${JSON.stringify(call)}\n${gateway.logText()}`);
  page.sipjsErrors = errors;
  return page;
}

async function withCall(sippOptions, body) {
  sippRuns += 1;
  const sipp = await Sipp.start({
    scenario: join(repo, 'tests/sipp', `${sippOptions.scenario}.xml`),
    port: pbxPort,
    directory: join(work, `sipp-${sippRuns}`),
    rtpEcho: true,
    pause: sippOptions.pause ?? 500,
  });
  const context = await browsers.launch(CALL_FLAGS);
  const logStart = gateway.logText().length;
  try {
    await body(await placeCall(context), sipp);
  } catch (error) {
    process.stderr.write(`--- callgate log during the test ---\n${gateway.logText().slice(logStart)}\n`);
    process.stderr.write(sipp.traces());
    throw error;
  } finally {
    await sipp.kill();
    await context.close();
  }
}

/** The newest call record once its end is written. */
async function lastEndedCall() {
  const deadline = Date.now() + 5000;
  for (;;) {
    const calls = JSON.parse(gateway.cli(['calls', 'list', '--json']));
    const newest = calls.reduce((found, call) => (found === null || call.id > found.id ? call : found), null);
    if ((newest !== null && newest.ended_at) || Date.now() > deadline) return newest;
    await new Promise((done) => setTimeout(done, 100));
  }
}

test('SIP.js calls a widget, hears its tone echoed, and hangs up with BYE', async () => {
  await withCall({ scenario: 'answer' }, async (page, sipp) => {
    const spectrum = await measureRemoteSpectrum(page, 1500, 'sipjsCall');
    assert.ok(spectrum, 'SIP.js has a remote stream');
    const peak = spectrumPeak(spectrum);
    console.log(`# SIP.js echo through SIPp: peak ${peak.hz.toFixed(1)} Hz at ${peak.db.toFixed(1)} dB`);
    assert.ok(toneMatches(peak, TONE_HZ), `expected ${TONE_HZ} ± 5 Hz, measured ${JSON.stringify(peak)}`);
    assert.equal(toneMatches(peak, WRONG_HZ), false, `the checker accepted ${WRONG_HZ} Hz for ${peak.hz} Hz`);

    await page.evaluate(() => window.sipjsCall.hangUp());
    await page.waitForFunction(() => window.sipjsCall.state === 'Terminated', null, { timeout: 10000 });
    assert.equal(await sipp.finished(), 0, 'SIPp got the BYE and ended its call');
    assert.deepEqual(page.sipjsErrors, []);

    const call = await lastEndedCall();
    assert.equal(call.end_cause, 'browser_hangup', JSON.stringify(call));
    assert.equal(call.browser.codec, 'opus', JSON.stringify(call));
    assert.equal(call.pbx.codec, 'pcmu', JSON.stringify(call));
    assert.ok(call.pbx.packets_received > 50, JSON.stringify(call));
  });
});

test('the PBX hangs up a SIP.js call: SIP.js sees the BYE', async () => {
  await withCall({ scenario: 'pbx_hangup', pause: 2500 }, async (page, sipp) => {
    await page.waitForFunction(() => window.sipjsCall.state === 'Terminated', null, { timeout: 20000 });
    assert.equal(await sipp.finished(), 0, 'SIPp got the 200 OK to its BYE');
    const call = await lastEndedCall();
    assert.equal(call.ended_by, 'pbx', JSON.stringify(call));
    assert.equal(call.end_cause, 'pbx_hangup', JSON.stringify(call));
  });
});
