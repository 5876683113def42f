// Shared by browser_offers.mjs (Chromium) and firefox.mjs: a gateway for calls to /demo, reading the SDP
// offer a browser's JsSIP sends, and comparing it with a golden fixture of tests/fixtures/sdp/browser.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Gateway, freePorts } from '../../widget/tests/gateway.mjs';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const FIXTURES = join(repo, 'tests/fixtures/sdp/browser');

/**
 * `callgate serve` (CALLGATE_BIN, else target/debug/callgate) in a temporary directory, for calls to the
 * echo endpoint behind /demo; `stop()` ends it and removes the directory unless E2E_KEEP is set.
 */
export async function startDemoGateway(name) {
  const work = mkdtempSync(join(tmpdir(), `callgate-e2e-${name}-`));
  const binary = process.env.CALLGATE_BIN || join(repo, 'target/debug/callgate');
  // No site widget is called; the origin only satisfies `widget add`.
  const gateway = await Gateway.start({
    binary, directory: join(work, 'gateway'), pbxPort: await freePorts(1), origins: ['http://localhost:1'],
  });
  gateway.stopAndClean = async () => {
    await gateway.stop();
    if (process.env.E2E_KEEP) console.log(`# kept ${work}`);
    else rmSync(work, { recursive: true, force: true });
  };
  return gateway;
}

/** The fixture `name` (as chrome_offer.sdp) of tests/fixtures/sdp/browser. */
export const fixture = (name) => readFileSync(join(FIXTURES, name), 'utf8');

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

/** Fails unless `sent` (an offer JsSIP sent) has the shape of the fixture `name`, listing the differing lines. */
export function assertOfferLike(assert, sent, name) {
  const sentShape = offerShape(sent);
  const fixtureShape = offerShape(fixture(name));
  const difference = {
    onlyInSent: sentShape.filter((line) => !fixtureShape.includes(line)),
    onlyInFixture: fixtureShape.filter((line) => !sentShape.includes(line)),
  };
  assert.deepEqual(sentShape, fixtureShape,
    `JsSIP's offer differs from ${name} (recapture with tests/fixtures/sdp/capture.sh): ${
      JSON.stringify(difference, null, 1)}`);
}

/** For the page, before JsSIP loads: records every text frame sent on a WebSocket in `window.sentFrames`. */
export const RECORD_WEBSOCKET_FRAMES = () => {
  window.sentFrames = [];
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function recordingSend(data) {
    if (typeof data === 'string') window.sentFrames.push(data);
    return send.call(this, data);
  };
};

/** The body of the first INVITE among `frames`, or null before there is one. */
export function inviteBody(frames) {
  const invite = (frames || []).find((frame) => frame.startsWith('INVITE '));
  return invite ? invite.slice(invite.indexOf('\r\n\r\n') + 4) : null;
}
