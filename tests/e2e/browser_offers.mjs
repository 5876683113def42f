// The golden SDP fixtures (tests/fixtures/sdp/browser, captured by tests/fixtures/sdp/capture.sh with a bare
// RTCPeerConnection) against what the widget's JsSIP really sends: headless Chromium calls the built-in echo
// endpoint through /demo, the INVITE it writes on the WebSocket is read back, and its SDP must have the
// fixture's shape (the same lines once ICE credentials, fingerprints, ids and ports are masked). When a new
// Chromium changes its offer, this fails and says to recapture. Run by ./run.sh next to the widget's e2e:
//
//   CALLGATE_BIN=… TONE_WAV=… node --test tests/e2e/browser_offers.mjs
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Browsers, FAKE_MICROPHONE, openWidgetPage, waitForState } from '../../widget/tests/browser.mjs';
import { waitUntil } from '../../widget/tests/gateway.mjs';
import {
  RECORD_WEBSOCKET_FRAMES, assertOfferLike, fixture, inviteBody, offerShape, startDemoGateway,
} from './offers.mjs';

const TONE_WAV = process.env.TONE_WAV;
assert.ok(TONE_WAV, 'TONE_WAV must name the fake microphone file');

const browsers = new Browsers();
let gateway;

before(async () => {
  gateway = await startDemoGateway('offers');
});

after(async () => {
  if (gateway) await gateway.stopAndClean();
  browsers.removeProfiles();
});

test('offer shapes differ when the offers do', () => {
  const chrome = fixture('chrome_offer.sdp');
  const shape = offerShape(chrome);
  assert.deepEqual(offerShape(chrome.replace(/a=ice-ufrag:\S+/, 'a=ice-ufrag:abcd')), shape);
  assert.notDeepEqual(offerShape(chrome.replace('a=rtcp-mux\r\n', '')), shape);
  assert.notDeepEqual(offerShape(chrome.replace(/ 111 /, ' 112 ')), shape);
  assert.throws(() => assertOfferLike(assert, chrome, 'chrome_offer_pcmu_only.sdp'), /onlyInSent/);
});

test('JsSIP in Chromium sends the offer of chrome_offer.sdp', async () => {
  const context = await browsers.launch([
    ...FAKE_MICROPHONE, `--use-file-for-fake-audio-capture=${TONE_WAV}`, '--allow-loopback-in-peer-connection',
  ]);
  try {
    await context.addInitScript(RECORD_WEBSOCKET_FRAMES);
    const page = await openWidgetPage(context, `${gateway.origin}/demo`);
    await page.locator('callgate-widget .call').click();
    await waitForState(page, 'in-call');
    const sent = await waitUntil(async () => inviteBody(await page.evaluate(() => window.sentFrames)), 'the INVITE');
    await page.locator('callgate-widget .hangup').click();
    await waitForState(page, 'ended');
    assertOfferLike(assert, sent, 'chrome_offer.sdp');
  } finally {
    await context.close();
  }
});
