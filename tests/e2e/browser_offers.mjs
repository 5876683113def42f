// The golden SDP fixtures (tests/fixtures/sdp/browser, captured by tests/fixtures/sdp/capture.sh with a bare
// RTCPeerConnection) against what the widget's JsSIP really sends: headless Chromium calls the built-in echo
// endpoint through /demo, the INVITE it writes on the WebSocket is read back, and its SDP must have the
// fixture's shape (the same lines once ICE credentials, fingerprints, ids and ports are masked). When a new
// Chromium changes its offer, this fails and says to recapture. Run by ./run.sh next to the widget's e2e:
//
//   CALLGATE_BIN=… TONE_WAV=… node --test tests/e2e/browser_offers.mjs
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Browsers, FAKE_MICROPHONE, openWidgetPage, waitForState } from '../../widget/tests/browser.mjs';
import { Gateway, freePorts, waitUntil } from '../../widget/tests/gateway.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../..');
const FIXTURES = join(repo, 'tests/fixtures/sdp/browser');
const BINARY = process.env.CALLGATE_BIN || join(repo, 'target/debug/callgate');
const TONE_WAV = process.env.TONE_WAV;
assert.ok(TONE_WAV, 'TONE_WAV must name the fake microphone file');

/**
 * `sdp` with what differs between two offers of one browser build masked: session id, ports, candidate
 * foundations, ICE credentials, fingerprint, SSRCs, CNAMEs and stream/track ids. One line per element.
 */
export function offerShape(sdp) {
  return sdp.split(/\r?\n/).filter((line) => line !== '').map((line) => line
    .replace(/^o=(\S+) \d+ /, 'o=$1 <SESSION-ID> ')
    .replace(/^m=(\w+) \d+ /, 'm=$1 <PORT> ')
    .replace(/^a=rtcp:\d+ /, 'a=rtcp:<PORT> ')
    .replace(/^a=candidate:\S+ (\d+) (\S+) (\d+) (\S+) \d+ typ/, 'a=candidate:<FOUNDATION> $1 $2 $3 $4 <PORT> typ')
    .replace(/^a=ice-ufrag:.*/, 'a=ice-ufrag:<UFRAG>')
    .replace(/^a=ice-pwd:.*/, 'a=ice-pwd:<PWD>')
    .replace(/^a=fingerprint:(\S+) .*/, 'a=fingerprint:$1 <FINGERPRINT>')
    .replace(/^a=ssrc:\d+ /, 'a=ssrc:<SSRC> ')
    .replace(/cname:\S+/, 'cname:<CNAME>')
    .replace(/\{?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\}?/g, '<ID>'));
}

/** The lines only in `a` and only in `b`, for a readable failure. */
function difference(a, b) {
  return { onlyInSent: a.filter((line) => !b.includes(line)), onlyInFixture: b.filter((line) => !a.includes(line)) };
}

// Records every text frame the page sends on a WebSocket, before JsSIP loads.
const RECORD_WEBSOCKET_FRAMES = () => {
  window.sentFrames = [];
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function recordingSend(data) {
    if (typeof data === 'string') window.sentFrames.push(data);
    return send.call(this, data);
  };
};

/** The body of the first INVITE among `frames`. */
function inviteBody(frames) {
  const invite = frames.find((frame) => frame.startsWith('INVITE '));
  if (!invite) return null;
  return invite.slice(invite.indexOf('\r\n\r\n') + 4);
}

const work = mkdtempSync(join(tmpdir(), 'callgate-e2e-offers-'));
const browsers = new Browsers();
let gateway;

before(async () => {
  gateway = await Gateway.start({
    binary: BINARY, directory: join(work, 'gateway'), pbxPort: await freePorts(1), origins: ['http://localhost:1'],
  });
});

after(async () => {
  if (gateway) await gateway.stop();
  browsers.removeProfiles();
  rmSync(work, { recursive: true, force: true });
});

/** Calls the demo endpoint from `context`, returns the SDP of the INVITE JsSIP sent, and hangs up. */
async function demoCallOffer(context) {
  await context.addInitScript(RECORD_WEBSOCKET_FRAMES);
  const page = await openWidgetPage(context, `${gateway.origin}/demo`);
  await page.locator('callgate-widget .call').click();
  await waitForState(page, 'in-call');
  const body = await waitUntil(async () => inviteBody(await page.evaluate(() => window.sentFrames)), 'the INVITE');
  await page.locator('callgate-widget .hangup').click();
  await waitForState(page, 'ended');
  return body;
}

test('offer shape checks catch a different offer', () => {
  const fixture = readFileSync(join(FIXTURES, 'chrome_offer.sdp'), 'utf8');
  const shape = offerShape(fixture);
  assert.deepEqual(offerShape(fixture.replace(/a=ice-ufrag:\S+/, 'a=ice-ufrag:abcd')), shape);
  assert.notDeepEqual(offerShape(fixture.replace('a=rtcp-mux\r\n', '')), shape);
  assert.notDeepEqual(offerShape(fixture.replace(/ 111 /, ' 112 ')), shape);
});

test('JsSIP in Chromium sends the offer of chrome_offer.sdp', async () => {
  const context = await browsers.launch([
    ...FAKE_MICROPHONE, `--use-file-for-fake-audio-capture=${TONE_WAV}`, '--allow-loopback-in-peer-connection',
  ]);
  try {
    const sent = offerShape(await demoCallOffer(context));
    const fixture = offerShape(readFileSync(join(FIXTURES, 'chrome_offer.sdp'), 'utf8'));
    assert.deepEqual(sent, fixture,
      `JsSIP's offer differs from chrome_offer.sdp (recapture with tests/fixtures/sdp/capture.sh): ${
        JSON.stringify(difference(sent, fixture), null, 1)}`);
  } finally {
    await context.close();
  }
});
