// The widget's DOM: a host element with an open shadow root holding the call button, the call panel, the
// screen-reader status region and the remote <audio>. State changes come from CallController.

import css from './styles.css';
import { CLOSE_ICON, HANGUP_ICON, MIC_ICON, MIC_OFF_ICON, PHONE_ICON } from './icons.js';
import { CallController } from './call.js';
import { STATES, formatDuration, isActive, isFinal } from './outcome.js';

/** The host element's tag: one name that no page is likely to style or script by accident. */
export const HOST_TAG = 'callgate-widget';

const KEYS = ['1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '0', '#'];
const KEY_NAMES = { '*': 'star', '#': 'pound' };

const TEMPLATE = `
<div class="cg" part="root">
  <div class="sr-only" role="status" aria-live="polite" aria-atomic="true" data-ref="live"></div>
  <section class="panel" data-ref="panel" aria-label="Call" hidden>
    <div class="head">
      <span class="dot" aria-hidden="true"></span>
      <p class="status" data-ref="status"></p>
      <span class="timer" role="timer" aria-label="Call time" data-ref="timer" hidden>00:00</span>
    </div>
    <p class="message" data-ref="message" hidden></p>
    <div class="keypad" role="group" aria-label="Keypad" data-ref="keypad" hidden>
      ${KEYS.map((key) => `<button type="button" class="key" data-key="${key}"${
    KEY_NAMES[key] ? ` aria-label="${KEY_NAMES[key]}"` : ''}>${key}</button>`).join('')}
    </div>
    <p class="dialed" aria-label="Keys sent" data-ref="dialed" hidden></p>
    <div class="actions">
      <button type="button" class="round-button mute" aria-label="Mute" aria-pressed="false" data-ref="mute"
        hidden>${MIC_ICON}</button>
      <button type="button" class="round-button hangup" aria-label="Hang up" data-ref="hangup">${HANGUP_ICON}</button>
      <button type="button" class="again" data-ref="again" hidden>${PHONE_ICON}<span>Call again</span></button>
      <button type="button" class="close-text" data-ref="close" hidden>Close</button>
    </div>
  </section>
  <button type="button" class="call" data-ref="call"></button>
  <audio autoplay data-ref="audio"></audio>
</div>`;

/**
 * Renders one widget for `settings` (see config.readSettings) at the end of doc.body and returns the object
 * published as window.callgateWidget.
 */
export function mountWidget(doc, settings) {
  const host = doc.createElement(HOST_TAG);
  const root = host.attachShadow({ mode: 'open' });
  root.innerHTML = `<style>${css}</style>${TEMPLATE}`;
  const ref = {};
  for (const element of root.querySelectorAll('[data-ref]')) ref[element.dataset.ref] = element;

  const label = settings.label || 'Call us';
  ref.call.setAttribute('aria-label', label);
  if (settings.label) {
    ref.call.innerHTML = `${PHONE_ICON}<span class="call-label"></span>`;
    ref.call.querySelector('.call-label').textContent = settings.label;
  } else {
    ref.call.innerHTML = PHONE_ICON;
    ref.call.classList.add('round');
  }
  ref.panel.setAttribute('aria-label', label);

  const api = {
    publicId: settings.publicId,
    host,
    remoteAudio: ref.audio,
    remoteStream: null,
    state: STATES.IDLE,
    message: '',
    /** Every state entered, oldest first: lets a test see short-lived states it did not poll in time. */
    history: [STATES.IDLE],
    call: () => controller.start(),
    hangup: () => controller.hangup(),
    sendDtmf: (digit) => sendDigit(digit),
  };

  let timerInterval = null;
  let dialed = '';

  const controller = new CallController(settings, {
    onState: (state, message) => render(state, message),
    onRemoteStream: (stream) => {
      api.remoteStream = stream;
      ref.audio.srcObject = stream;
      // autoplay covers most pages; play() covers a page that blocks it until a gesture (we had one).
      const played = ref.audio.play();
      if (played && typeof played.catch === 'function') played.catch(() => {});
    },
  });

  function render(state, message) {
    const previous = api.state;
    // Read before the buttons change: hiding the focused button drops focus to the page.
    const focusInWidget = root.activeElement !== null || doc.activeElement === host;
    api.state = state;
    api.message = message;
    api.history.push(state);

    const open = state !== STATES.IDLE;
    ref.panel.hidden = !open;
    ref.call.hidden = open;
    ref.panel.dataset.state = state;
    ref.panel.classList.toggle('error', isFinal(state) && state !== STATES.ENDED);

    const [headline, ...rest] = splitMessage(state, message);
    ref.status.textContent = headline;
    ref.message.textContent = rest.join(' ');
    ref.message.hidden = rest.length === 0;
    ref.live.textContent = message;

    const inCall = state === STATES.IN_CALL;
    ref.keypad.hidden = !inCall;
    ref.mute.hidden = !inCall;
    ref.hangup.hidden = !isActive(state);
    ref.again.hidden = !isFinal(state);
    ref.close.hidden = !isFinal(state);
    ref.dialed.hidden = !inCall || dialed === '';
    if (!inCall) setMuted(false);

    if (inCall && timerInterval === null) {
      ref.timer.hidden = false;
      updateTimer();
      timerInterval = setInterval(updateTimer, 500);
    } else if (!inCall && timerInterval !== null) {
      clearInterval(timerInterval);
      timerInterval = null;
      updateTimer(); // leaves the final duration on show
    }
    if (!inCall && state !== STATES.ENDED) ref.timer.hidden = true;
    if (state === STATES.CONNECTING && previous !== STATES.CONNECTING) {
      dialed = '';
      ref.dialed.textContent = '';
      ref.timer.hidden = true;
      ref.timer.textContent = formatDuration(0);
    }
    if (state === STATES.IDLE) {
      api.remoteStream = null;
      ref.audio.srcObject = null;
    }

    if (focusInWidget) moveFocus(previous, state);
    host.dispatchEvent(new CustomEvent('callgate:state', {
      bubbles: true, composed: true, detail: { state, message, publicId: settings.publicId },
    }));
  }

  // Keeps keyboard users where the action is: the hang-up button while a call is under way, "Call again"
  // when it ended, and the call button when the panel closes. Only when focus was already in the widget,
  // so a state change never steals focus from the page.
  function moveFocus(previous, state) {
    if (isActive(state) && !isActive(previous)) ref.hangup.focus();
    else if (isFinal(state)) ref.again.focus();
    else if (state === STATES.IDLE) ref.call.focus();
  }

  function updateTimer() {
    const elapsed = controller.elapsed();
    ref.timer.textContent = formatDuration(elapsed === null ? 0 : elapsed);
  }

  function setMuted(muted) {
    ref.mute.setAttribute('aria-pressed', String(muted));
    ref.mute.innerHTML = muted ? MIC_OFF_ICON : MIC_ICON;
  }

  function sendDigit(digit) {
    if (!controller.sendDigit(digit)) return false;
    dialed = (dialed + digit).slice(-24);
    ref.dialed.textContent = dialed;
    ref.dialed.hidden = false;
    return true;
  }

  ref.call.addEventListener('click', () => controller.start());
  ref.again.addEventListener('click', () => controller.start());
  ref.hangup.addEventListener('click', () => controller.hangup());
  ref.close.addEventListener('click', () => controller.reset());
  ref.mute.addEventListener('click', () => setMuted(controller.toggleMute()));
  ref.keypad.addEventListener('click', (event) => {
    const key = event.target.closest('[data-key]');
    if (key) sendDigit(key.dataset.key);
  });
  ref.panel.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') {
      event.preventDefault();
      if (isActive(controller.state)) controller.hangup();
      else controller.reset();
    } else if (controller.state === STATES.IN_CALL && /^[0-9*#]$/.test(event.key)
      && !event.ctrlKey && !event.metaKey && !event.altKey) {
      // Typing digits while the panel has focus dials them, like a phone keypad.
      event.preventDefault();
      sendDigit(event.key);
    }
  });

  doc.body.appendChild(host);
  return api;
}

// A final state's message is a headline for the panel plus an explanation below it; the live region and
// window.callgateWidget.message keep the whole sentence. Headlines carry no final full stop, also when the
// message is a single sentence ("Calls are not available right now."), and the explanation starts with a
// capital ("Call ended: the connection was lost."), so that every error reads alike.
function splitMessage(state, message) {
  if (!isFinal(state)) return [message];
  const match = /^([^.:]+[.:])\s*(.*)$/.exec(message);
  if (!match) return [message];
  const [, headline, explanation] = match;
  return [headline.replace(/[.:]$/, ''),
    ...(explanation === '' ? [] : [explanation.charAt(0).toUpperCase() + explanation.slice(1)])];
}
