// Browser tests of the widget UI alone (no gateway): Debian Chromium driven by playwright-core loads a host
// page with hostile CSS from one origin and widget.js from another (a stand-in that only serves the file and
// holds or refuses the WebSocket). Checks the shadow DOM isolation, keyboard and ARIA behaviour, and the
// microphone-denied, connecting/hang-up and gateway-unreachable states; saves a screenshot of each state.
//
//   WIDGET_JS=/path/to/widget.js ARTIFACTS=/path/to/dir node --test tests/ui.mjs
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import {
  Browsers, FAKE_MICROPHONE, focusedInWidget, liveText, openWidgetPage, screenshotWidget, shadow, style,
  waitForState, widgetState,
} from './browser.mjs';

const WIDGET_JS = readFileSync(process.env.WIDGET_JS || 'dist/widget.js');
const ARTIFACTS = process.env.ARTIFACTS || '../tests/artifacts/widget';
const PUBLIC_ID = 'demo_Widget-1';
mkdirSync(ARTIFACTS, { recursive: true });

// Rules a careless host page might have; none of them may reach inside the widget.
const HOSTILE_CSS = `
  * { font-size: 40px; font-family: "Courier New", monospace; line-height: 3; letter-spacing: 4px; }
  button { color: red; background: yellow; border: 5px dashed blue; padding: 30px; border-radius: 0; }
  div, section, p, span { margin: 40px; padding: 20px; background: pink; }
  svg { width: 300px; height: 300px; }
  body { color: purple; }`;

function listen(server) {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)));
}

/** The gateway stand-in: serves widget.js, records WebSocket upgrade requests and holds or refuses them. */
async function startGatewayStandIn() {
  const standIn = { upgrades: [], sockets: new Set(), holdWebSocket: true };
  const server = createServer((request, response) => {
    if (request.url.split('?')[0] === '/widget.js') {
      response.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' });
      response.end(WIDGET_JS);
    } else {
      response.writeHead(404).end();
    }
  });
  server.on('connection', (socket) => {
    standIn.sockets.add(socket);
    socket.on('close', () => standIn.sockets.delete(socket));
  });
  server.on('upgrade', (request, socket) => {
    standIn.upgrades.push({ url: request.url, origin: request.headers.origin,
      protocol: request.headers['sec-websocket-protocol'] });
    // Holding keeps the widget at "connecting" (a gateway that does not answer yet).
    if (!standIn.holdWebSocket) socket.destroy();
  });
  standIn.port = await listen(server);
  standIn.origin = `http://127.0.0.1:${standIn.port}`;
  standIn.close = () => new Promise((resolve) => {
    server.close(resolve);
    for (const socket of standIn.sockets) socket.destroy();
  });
  return standIn;
}

/** The website: host pages on another origin (another port) that embed the widget from the stand-in. */
async function startSite(gatewayOrigin) {
  const server = createServer((request, response) => {
    const url = new URL(request.url, 'http://site');
    const label = url.searchParams.get('label');
    const labelAttribute = label ? ` data-label="${label.replace(/[^A-Za-z ]/g, '')}"` : '';
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    response.end(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Host page</title><style>${HOSTILE_CSS}</style></head>
<body>
  <h1>Host page</h1>
  <p>Some text of the website.</p>
  <button type="button" id="own">Page button</button>
  <script src="${gatewayOrigin}/widget.js" data-widget="${PUBLIC_ID}"${labelAttribute} async></script>
</body></html>`);
  });
  const port = await listen(server);
  return { server, origin: `http://127.0.0.1:${port}` };
}

let standIn;
let site;
const browsers = new Browsers();

before(async () => {
  standIn = await startGatewayStandIn();
  site = await startSite(standIn.origin);
});

after(async () => {
  await standIn.close();
  site.server.close();
  browsers.removeProfiles();
});

const launch = (flags) => browsers.launch(flags);
const openPage = (context, query = '') => openWidgetPage(context, `${site.origin}/${query}`);
const screenshot = (page, name) => screenshotWidget(page, ARTIFACTS, name);

test('renders a call button inside a shadow root, untouched by the host page CSS', async () => {
  const context = await launch(FAKE_MICROPHONE);
  try {
    const page = await openPage(context);
    await page.screenshot({ path: join(ARTIFACTS, 'page-idle.png') });
    await screenshot(page, 'idle');

    const structure = await page.evaluate(() => {
      const hosts = document.querySelectorAll('callgate-widget');
      const host = hosts[0];
      return {
        hosts: hosts.length,
        shadowMode: host.shadowRoot && host.shadowRoot.mode,
        lightChildren: host.children.length,
        shadowButtons: host.shadowRoot.querySelectorAll('button').length,
        styleInShadow: host.shadowRoot.querySelectorAll('style').length,
        pageButtons: document.querySelectorAll('button').length,
        audio: window.callgateWidget.remoteAudio.tagName,
        audioInShadow: window.callgateWidget.remoteAudio.getRootNode() === host.shadowRoot,
        audioAutoplay: window.callgateWidget.remoteAudio.autoplay,
      };
    });
    assert.deepEqual(structure, {
      hosts: 1, shadowMode: 'open', lightChildren: 0, shadowButtons: 17, styleInShadow: 1, pageButtons: 1,
      audio: 'AUDIO', audioInShadow: true, audioAutoplay: true,
    });

    // The hostile rules are live on the page itself (so the checks below can fail)...
    const own = await page.evaluate(() => {
      const style = getComputedStyle(document.getElementById('own'));
      return { color: style.color, fontSize: style.fontSize };
    });
    assert.deepEqual(own, { color: 'rgb(255, 0, 0)', fontSize: '40px' });
    // ...and none of them reaches the widget.
    assert.equal(await style(page, '.call', 'color'), 'rgb(255, 255, 255)');
    assert.equal(await style(page, '.call', 'background-color'), 'rgb(30, 142, 62)');
    assert.equal(await style(page, '.call', 'border-top-style'), 'none');
    assert.equal(await style(page, '.call', 'width'), '56px');
    assert.equal(await style(page, '.call', 'height'), '56px');
    assert.equal(await style(page, '.call', 'border-top-left-radius'), '28px');
    assert.equal(await style(page, '.call svg', 'width'), '26px');
    assert.equal(await style(page, '.cg', 'font-size'), '14px');
    assert.equal(await style(page, '.cg', 'letter-spacing'), 'normal');
    assert.equal(await style(page, '.panel', 'background-color'), 'rgb(255, 255, 255)');
    assert.equal(await style(page, '.status', 'margin-top'), '0px');
    assert.equal(await style(page, '.cg', 'position'), 'fixed');

    const rect = await shadow(page, '.call', 'const r = element.getBoundingClientRect(); return [r.right, r.bottom];');
    assert.deepEqual(rect, [900 - 20, 640 - 20], 'the button sits 20px from the bottom-right corner');
    assert.equal(await shadow(page, '.call', 'return element.getAttribute("aria-label");'), 'Call us');
    assert.equal(await widgetState(page), 'idle');
    assert.deepEqual(page.widgetErrors, []);
  } finally {
    await context.close();
  }
});

test('a data-label makes a labelled pill; Tab reaches it and shows a focus ring', async () => {
  const context = await launch(FAKE_MICROPHONE);
  try {
    const page = await openPage(context, '?label=Call sales');
    assert.equal(await shadow(page, '.call-label', 'return element.textContent;'), 'Call sales');
    assert.equal(await shadow(page, '.call', 'return element.getAttribute("aria-label");'), 'Call sales');
    assert.equal(await style(page, '.call-label', 'font-size'), '15px');

    await page.keyboard.press('Tab'); // the page's own button
    assert.equal(await page.evaluate(() => document.activeElement.id), 'own');
    await page.keyboard.press('Tab'); // into the widget
    assert.deepEqual(await focusedInWidget(page), { ref: 'call', label: 'Call sales', text: 'Call sales' });
    assert.equal(await style(page, '.call', 'outline-style'), 'solid');
    assert.equal(await style(page, '.call', 'outline-color'), 'rgb(26, 115, 232)');
    await screenshot(page, 'idle-label-focused');
  } finally {
    await context.close();
  }
});

test('microphone denied: Enter on the button asks, the refusal is announced, Escape closes', async () => {
  // No fake-UI flag and no granted permission: Chromium refuses the microphone.
  const context = await launch(['--use-fake-device-for-media-stream']);
  try {
    await context.clearPermissions();
    const page = await openPage(context);
    await shadow(page, '.call', 'element.focus();');
    await page.keyboard.press('Enter');
    await waitForState(page, 'mic-denied');
    const history = await page.evaluate(() => window.callgateWidget.history);
    assert.deepEqual(history, ['idle', 'connecting', 'mic-denied']);
    assert.match(await liveText(page), /^Microphone access was denied\. Allow the microphone/);
    assert.equal(await shadow(page, '.status', 'return element.textContent;'), 'Microphone access was denied');
    assert.equal(await shadow(page, '[role="status"]', 'return element.getAttribute("aria-live");'), 'polite');
    assert.equal(await style(page, '.status', 'color'), 'rgb(197, 34, 31)');
    // Focus followed the panel, so the keyboard user can call again or close.
    assert.deepEqual(await focusedInWidget(page), { ref: 'again', label: null, text: 'Call again' });
    assert.equal(standIn.upgrades.length, 0, 'no connection is made without a microphone');
    await screenshot(page, 'mic-denied');

    await page.keyboard.press('Escape');
    await waitForState(page, 'idle');
    assert.deepEqual(await focusedInWidget(page), { ref: 'call', label: 'Call us', text: '' });
    assert.equal(await shadow(page, '.panel', 'return element.hidden;'), true);
  } finally {
    await context.close();
  }
});

test('connecting: the WebSocket goes to the script origin; hang-up has focus, Escape ends the attempt', async () => {
  const context = await launch(FAKE_MICROPHONE);
  try {
    standIn.upgrades.length = 0;
    standIn.holdWebSocket = true;
    const page = await openPage(context);
    const states = [];
    await page.exposeFunction('recordState', (state) => states.push(state));
    await page.evaluate(() => window.callgateWidget.host.addEventListener('callgate:state',
      (event) => window.recordState(event.detail.state)));

    await shadow(page, '.call', 'element.focus();');
    await page.keyboard.press('Space');
    await page.waitForFunction(() => window.callgateWidget.state === 'connecting'
      && window.callgateWidget.message === 'Connecting…');
    await waitUntil(() => standIn.upgrades.length === 1);
    assert.deepEqual(standIn.upgrades[0], { url: '/ws', origin: site.origin, protocol: 'sip' });
    assert.equal(await liveText(page), 'Connecting…');
    assert.deepEqual(await focusedInWidget(page), { ref: 'hangup', label: 'Hang up', text: '' });
    assert.equal(await shadow(page, '.keypad', 'return element.hidden;'), true, 'no keypad before answer');
    assert.equal(await shadow(page, '.mute', 'return element.hidden;'), true);
    await screenshot(page, 'connecting');

    await page.keyboard.press('Escape');
    await waitForState(page, 'ended');
    assert.equal(await liveText(page), 'Call ended');
    assert.deepEqual(await focusedInWidget(page), { ref: 'again', label: null, text: 'Call again' });
    await screenshot(page, 'ended');
    assert.deepEqual(states, ['connecting', 'connecting', 'ended']);
  } finally {
    await context.close();
  }
});

test('gateway unreachable: the WebSocket to a closed port fails and the widget says so', async () => {
  const context = await launch(FAKE_MICROPHONE);
  try {
    const page = await openPage(context);
    // The script came from the stand-in; now the gateway is gone, so ws://…/ws hits a closed port.
    await standIn.close();
    await shadow(page, '.call', 'element.click();');
    await waitForState(page, 'unreachable');
    const history = await page.evaluate(() => window.callgateWidget.history);
    assert.deepEqual(history, ['idle', 'connecting', 'connecting', 'unreachable']);
    assert.equal(await liveText(page), 'Cannot reach the call service. Check your connection and try again.');
    assert.equal(await shadow(page, '.hangup', 'return element.hidden;'), true);
    await screenshot(page, 'unreachable');
  } finally {
    await context.close();
  }
});

async function waitUntil(condition, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out waiting for the gateway stand-in');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
