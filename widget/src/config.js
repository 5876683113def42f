// Reading the embed snippet: which <script> element loaded us, which widget it names, and where the gateway is.
// Pure functions of their inputs, so tests/unit.test.mjs can run them under node.

const SCRIPT_NAME = '/widget.js';
const MOUNTED_MARK = 'data-callgate-mounted';

/**
 * Finds the <script> element that loaded this bundle. document.currentScript is set while a classic script
 * runs (async or not); the fallback covers loaders that inject the code some other way: the first snippet
 * script (src ending in /widget.js, with data-widget) that has not been mounted yet.
 */
export function findOwnScript(doc) {
  const current = doc.currentScript;
  if (current && current.hasAttribute('data-widget') && !current.hasAttribute(MOUNTED_MARK)) {
    return current;
  }
  for (const script of doc.querySelectorAll('script[data-widget]')) {
    if (script.hasAttribute(MOUNTED_MARK)) continue;
    const src = script.getAttribute('src') || '';
    if (src.split(/[?#]/)[0].endsWith(SCRIPT_NAME)) return script;
  }
  return null;
}

/** Marks a script element as mounted so a second copy of the bundle does not render a second button. */
export function markMounted(script) {
  script.setAttribute(MOUNTED_MARK, '');
}

/**
 * The gateway a script src points at: https → wss://host/ws, http → ws://host/ws. `sipHost` is the host
 * without a port (a port in a SIP URI would name a SIP port, which the WebSocket gateway does not use).
 * Returns null for anything that is not an absolute http(s) URL.
 */
export function gatewayFromScriptSrc(src, baseUrl) {
  let url;
  try {
    url = new URL(src, baseUrl);
  } catch {
    return null;
  }
  let wsScheme;
  if (url.protocol === 'https:') wsScheme = 'wss:';
  else if (url.protocol === 'http:') wsScheme = 'ws:';
  else return null;
  return { wsUrl: `${wsScheme}//${url.host}/ws`, sipHost: url.hostname };
}

// Public ids are URL-safe (letters, digits, '-', '_'); anything else would have to be escaped in a SIP URI
// and is certainly a typo in the snippet.
const PUBLIC_ID = /^[A-Za-z0-9_-]{1,128}$/;
// A token goes into a SIP header: visible ASCII only, so it cannot break the header or add another.
const TOKEN = /^[\x21-\x7e]{1,4096}$/;

/**
 * The widget settings from the script element's data-* attributes, or `{ error }` naming the bad attribute.
 * `src` and `baseUrl` are passed separately so tests need no DOM.
 */
export function readSettings(dataset, src, baseUrl) {
  const publicId = (dataset.widget || '').trim();
  if (!PUBLIC_ID.test(publicId)) return { error: 'data-widget must be the widget public id' };
  const token = dataset.token === undefined ? null : dataset.token.trim();
  if (token !== null && !TOKEN.test(token)) return { error: 'data-token is not a valid token' };
  const gateway = gatewayFromScriptSrc(src, baseUrl);
  if (!gateway) return { error: 'the script src must be an http(s) URL of the gateway' };
  const label = (dataset.label || '').trim().slice(0, 40);
  const displayName = (dataset.displayName || '').trim().slice(0, 64);
  return {
    publicId,
    token,
    label,
    displayName,
    wsUrl: gateway.wsUrl,
    target: `sip:${publicId}@${gateway.sipHost}`,
  };
}
