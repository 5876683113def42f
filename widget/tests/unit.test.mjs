// Unit tests of the widget's pure parts (settings, gateway URL, outcome mapping, timer format) under node.
//   node --test tests/
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { gatewayFromScriptSrc, readSettings } from '../src/config.js';
import {
  STATES, classifyFailure, classifyMicrophoneError, endedMessage, formatDuration, retryAfterSentence,
} from '../src/outcome.js';

test('gateway: https becomes wss, http becomes ws, path /ws, SIP host without the port', () => {
  assert.deepEqual(gatewayFromScriptSrc('https://gw.example.com/widget.js'),
    { wsUrl: 'wss://gw.example.com/ws', sipHost: 'gw.example.com' });
  assert.deepEqual(gatewayFromScriptSrc('http://127.0.0.1:8080/widget.js?v=1'),
    { wsUrl: 'ws://127.0.0.1:8080/ws', sipHost: '127.0.0.1' });
  assert.deepEqual(gatewayFromScriptSrc('https://[::1]:8443/widget.js'),
    { wsUrl: 'wss://[::1]:8443/ws', sipHost: '[::1]' });
  assert.deepEqual(gatewayFromScriptSrc('/widget.js', 'https://site.example/page'),
    { wsUrl: 'wss://site.example/ws', sipHost: 'site.example' });
  assert.equal(gatewayFromScriptSrc('file:///tmp/widget.js'), null);
  assert.equal(gatewayFromScriptSrc('not a url'), null);
});

test('settings: target, token and label from data attributes', () => {
  const settings = readSettings({ widget: 'Ab3_x-9', token: 'v1.123.abc', label: 'Call sales' },
    'https://gw.example.com/widget.js');
  assert.equal(settings.target, 'sip:Ab3_x-9@gw.example.com');
  assert.equal(settings.wsUrl, 'wss://gw.example.com/ws');
  assert.equal(settings.token, 'v1.123.abc');
  assert.equal(settings.label, 'Call sales');
  assert.equal(readSettings({ widget: 'abc' }, 'https://gw.example.com/widget.js').token, null);
});

test('settings: a bad id, token or src is refused with the attribute named', () => {
  const src = 'https://gw.example.com/widget.js';
  assert.match(readSettings({}, src).error, /data-widget/);
  assert.match(readSettings({ widget: 'a b' }, src).error, /data-widget/);
  assert.match(readSettings({ widget: 'x@evil.example' }, src).error, /data-widget/);
  assert.match(readSettings({ widget: 'abc', token: 'a\r\nVia: x' }, src).error, /data-token/);
  assert.match(readSettings({ widget: 'abc', token: '' }, src).error, /data-token/);
  assert.match(readSettings({ widget: 'abc' }, 'ftp://gw.example.com/widget.js').error, /src/);
});

test('failure: busy, no answer and refused by status code', () => {
  for (const code of [486, 600]) assert.equal(classifyFailure({ statusCode: code }).state, STATES.BUSY);
  for (const code of [408, 480, 487]) assert.equal(classifyFailure({ statusCode: code }).state, STATES.NO_ANSWER);
  for (const code of [403, 404, 503]) {
    const outcome = classifyFailure({ statusCode: code });
    assert.equal(outcome.state, STATES.REFUSED);
    assert.equal(outcome.message, 'Calls are not available right now.');
  }
  assert.equal(classifyFailure({ statusCode: 500 }).state, STATES.FAILED);
  assert.equal(classifyFailure({ statusCode: 488 }).state, STATES.FAILED);
});

test('failure: 503 with Retry-After tells when to try again', () => {
  assert.equal(classifyFailure({ statusCode: 503, retryAfter: '30' }).message,
    'Calls are not available right now. Please try again in 30 seconds.');
  assert.equal(classifyFailure({ statusCode: 503, retryAfter: 300 }).message,
    'Calls are not available right now. Please try again in about 5 minutes.');
  assert.equal(retryAfterSentence('1'), ' Please try again in 1 second.');
  assert.equal(retryAfterSentence('junk'), '');
  assert.equal(retryAfterSentence('0'), '');
});

test('failure without a response: hang-up by the caller ends, a lost transport is unreachable', () => {
  assert.equal(classifyFailure({ cause: 'Canceled', hangupRequested: true }).state, STATES.ENDED);
  // JsSIP reports a transport error during the INVITE as a local cancel.
  assert.equal(classifyFailure({ cause: 'Canceled' }).state, STATES.UNREACHABLE);
  assert.equal(classifyFailure({ cause: 'Connection Error' }).state, STATES.UNREACHABLE);
  assert.equal(classifyFailure({ cause: 'Request Timeout' }).state, STATES.UNREACHABLE);
  assert.equal(classifyFailure({ cause: 'WebRTC Error', transportLost: true }).state, STATES.UNREACHABLE);
  assert.equal(classifyFailure({ cause: 'User Denied Media Access' }).state, STATES.MIC_DENIED);
  assert.equal(classifyFailure({ cause: 'WebRTC Error' }).state, STATES.FAILED);
});

test('ended: a BYE or our hang-up is a plain end, a lost connection says so', () => {
  assert.equal(endedMessage({ cause: 'Terminated' }), 'Call ended');
  assert.equal(endedMessage({ cause: 'Connection Error', hangupRequested: true }), 'Call ended');
  assert.equal(endedMessage({ cause: 'RTP Timeout' }), 'Call ended: the connection was lost.');
});

test('microphone errors: denied versus missing', () => {
  assert.equal(classifyMicrophoneError({ name: 'NotAllowedError' }).state, STATES.MIC_DENIED);
  assert.equal(classifyMicrophoneError({ name: 'NotFoundError' }).state, STATES.FAILED);
  assert.match(classifyMicrophoneError({ name: 'NotFoundError' }).message, /No microphone/);
  assert.equal(classifyMicrophoneError(undefined).state, STATES.FAILED);
});

test('timer: mm:ss, then h:mm:ss', () => {
  assert.equal(formatDuration(0), '00:00');
  assert.equal(formatDuration(5999), '00:05');
  assert.equal(formatDuration(65000), '01:05');
  assert.equal(formatDuration(3599000), '59:59');
  assert.equal(formatDuration(3600000), '1:00:00');
  assert.equal(formatDuration(-10), '00:00');
});
