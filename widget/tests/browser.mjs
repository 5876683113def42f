// Helpers shared by the browser tests (ui.mjs without a gateway, e2e.mjs with the real one): the Debian
// Chromium launched by playwright-core with the flags of ../shared/TESTING.md, and small readers of the
// widget's shadow DOM and state.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const VIEWPORT = { width: 900, height: 640 };

// A fresh profile, no network beyond loopback, no Google lookups.
export const BASE_FLAGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-domain-reliability', '--no-pings',
  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1',
  '--autoplay-policy=no-user-gesture-required',
];
/** The microphone is granted without a prompt; Chromium's fake device plays a beep unless a file is given. */
export const FAKE_MICROPHONE = ['--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream'];

/** Fresh-profile Chromium launches; `closeAll` removes their profiles. */
export class Browsers {
  constructor() {
    this.profiles = [];
  }

  async launch(flags) {
    const profile = mkdtempSync(join(tmpdir(), 'callgate-widget-browser-'));
    this.profiles.push(profile);
    return chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [...BASE_FLAGS, ...flags],
      viewport: VIEWPORT,
      deviceScaleFactor: 2,
    });
  }

  removeProfiles() {
    for (const profile of this.profiles) rmSync(profile, { recursive: true, force: true });
    this.profiles.length = 0;
  }
}

/** Opens `url` and waits for the widget to mount; page errors are collected in `page.widgetErrors`. */
export async function openWidgetPage(context, url) {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto(url);
  await page.waitForFunction(() => window.callgateWidget !== undefined);
  page.widgetErrors = errors;
  return page;
}

export const widgetState = (page) => page.evaluate(() => window.callgateWidget.state);
export const widgetHistory = (page) => page.evaluate(() => window.callgateWidget.history);
export const waitForState = (page, state, timeout = 15000) =>
  page.waitForFunction((wanted) => window.callgateWidget.state === wanted, state, { timeout });

/** Runs `fn` (a function body with `element` in scope) on the first match of `selector` in the shadow root. */
export const shadow = (page, selector, fn) => page.evaluate(([sel, body]) => {
  const element = document.querySelector('callgate-widget').shadowRoot.querySelector(sel);
  return new Function('element', body)(element);
}, [selector, fn]);
export const style = (page, selector, property) =>
  shadow(page, selector, `return getComputedStyle(element).getPropertyValue(${JSON.stringify(property)});`);
export const liveText = (page) => shadow(page, '[role="status"]', 'return element.textContent;');
export const focusedInWidget = (page) => page.evaluate(() => {
  const host = document.querySelector('callgate-widget');
  const active = host.shadowRoot.activeElement;
  return document.activeElement === host && active
    ? { ref: active.dataset.ref || null, label: active.getAttribute('aria-label'), text: active.textContent }
    : null;
});

/** Screenshot of the widget with a margin of page around it, for looking at the layout: `dir/name.png`. */
export async function screenshotWidget(page, dir, name) {
  const box = await page.evaluate(() => {
    const rect = document.querySelector('callgate-widget').shadowRoot.querySelector('.cg').getBoundingClientRect();
    return { x: rect.x, y: rect.y, width: rect.width, height: rect.height };
  });
  const margin = 24;
  const clip = {
    x: Math.max(0, box.x - margin), y: Math.max(0, box.y - margin),
    width: box.width + 2 * margin, height: box.height + 2 * margin,
  };
  clip.width = Math.min(clip.width, VIEWPORT.width - clip.x);
  clip.height = Math.min(clip.height, VIEWPORT.height - clip.y);
  await page.screenshot({ path: join(dir, `${name}.png`), clip });
}
