// One call attempt at a time through JsSIP: microphone → WebSocket → INVITE → media, reported as widget
// states. The view never touches JsSIP; it calls start/hangup/toggleMute/sendDigit and renders onState.

import { UA, WebSocketInterface, debug as jssipDebug } from 'jssip';
import {
  STATES, MESSAGES, classifyFailure, classifyMicrophoneError, endedMessage, isActive,
} from './outcome.js';

// A WebSocket that neither opens nor fails within this time counts as unreachable (a black-holed address
// otherwise leaves the caller at "Connecting…" for the browser's TCP timeout, minutes).
const CONNECT_TIMEOUT_MS = 10000;

jssipDebug.disable();

export class CallController {
  /**
   * settings: from config.readSettings. onState(state, message) is called on every change;
   * onRemoteStream(stream) when the far end's audio arrives.
   */
  constructor(settings, { onState, onRemoteStream }) {
    this.settings = settings;
    this.onState = onState;
    this.onRemoteStream = onRemoteStream;
    this.state = STATES.IDLE;
    this.attempt = null;
  }

  /** Places a call; ignored while one is under way. */
  async start() {
    if (isActive(this.state)) return;
    // Each attempt keeps its own record so late events from an abandoned one cannot move the widget.
    const attempt = {
      ua: null, session: null, localStream: null, hangupRequested: false, transportLost: false,
      connected: false, connectTimer: null, answeredAt: null, finished: false,
    };
    this.attempt = attempt;
    this.setState(STATES.CONNECTING, 'Waiting for microphone permission…');

    const media = navigator.mediaDevices;
    if (!media || typeof media.getUserMedia !== 'function') {
      this.finish(attempt, STATES.FAILED, 'Calling needs a secure (https) page and a browser with WebRTC.');
      return;
    }
    try {
      attempt.localStream = await media.getUserMedia({ audio: true, video: false });
    } catch (error) {
      const outcome = classifyMicrophoneError(error);
      this.finish(attempt, outcome.state, outcome.message);
      return;
    }
    if (attempt.finished) {
      // hung up while the permission prompt was open
      attempt.localStream.getTracks().forEach((track) => track.stop());
      return;
    }
    this.setState(STATES.CONNECTING, MESSAGES[STATES.CONNECTING]);
    this.connect(attempt);
  }

  connect(attempt) {
    const { settings } = this;
    let ua;
    try {
      ua = new UA({
        sockets: [new WebSocketInterface(settings.wsUrl)],
        uri: 'sip:anonymous@anonymous.invalid',
        display_name: settings.displayName || undefined,
        register: false,
        user_agent: 'callgate-widget',
      });
    } catch {
      this.finish(attempt, STATES.FAILED, MESSAGES[STATES.FAILED]);
      return;
    }
    attempt.ua = ua;
    attempt.connectTimer = setTimeout(() => {
      if (!attempt.connected) this.finish(attempt, STATES.UNREACHABLE, MESSAGES[STATES.UNREACHABLE]);
    }, CONNECT_TIMEOUT_MS);
    ua.on('connected', () => {
      if (attempt.finished || attempt.connected) return;
      attempt.connected = true;
      clearTimeout(attempt.connectTimer);
      this.invite(attempt);
    });
    ua.on('disconnected', () => {
      if (attempt.finished) return;
      attempt.transportLost = true;
      // Before the INVITE there is no session to report the loss; afterwards the session's own
      // failed/ended event follows and is classified with transportLost set.
      if (!attempt.session) this.finish(attempt, STATES.UNREACHABLE, MESSAGES[STATES.UNREACHABLE]);
    });
    ua.start();
  }

  invite(attempt) {
    const { settings } = this;
    const extraHeaders = settings.token ? [`X-Callgate-Token: ${settings.token}`] : [];
    let session;
    try {
      session = attempt.ua.call(settings.target, {
        mediaStream: attempt.localStream,
        mediaConstraints: { audio: true, video: false },
        // The gateway is ICE-lite on a public address: host candidates are all that is needed.
        pcConfig: { iceServers: [] },
        rtcOfferConstraints: { offerToReceiveAudio: true, offerToReceiveVideo: false },
        extraHeaders,
        eventHandlers: {
          peerconnection: ({ peerconnection }) => {
            peerconnection.addEventListener('track', (event) => {
              if (attempt.finished || event.track.kind !== 'audio') return;
              const stream = event.streams && event.streams[0] ? event.streams[0] : new MediaStream([event.track]);
              this.onRemoteStream(stream);
            });
          },
        },
      });
    } catch {
      this.finish(attempt, STATES.FAILED, MESSAGES[STATES.FAILED]);
      return;
    }
    attempt.session = session;
    session.on('progress', () => {
      if (!attempt.finished && this.state === STATES.CONNECTING) {
        this.setState(STATES.RINGING, MESSAGES[STATES.RINGING]);
      }
    });
    session.on('accepted', () => {
      if (attempt.finished) return;
      attempt.answeredAt = Date.now();
      this.setState(STATES.IN_CALL, MESSAGES[STATES.IN_CALL]);
    });
    session.on('failed', (event) => {
      if (attempt.finished) return;
      const response = event.originator === 'remote' && event.message && event.message.status_code
        ? event.message : null;
      const outcome = classifyFailure({
        statusCode: response ? response.status_code : null,
        retryAfter: response && response.hasHeader('Retry-After') ? response.getHeader('Retry-After') : null,
        cause: event.cause,
        hangupRequested: attempt.hangupRequested,
        transportLost: attempt.transportLost,
      });
      this.finish(attempt, outcome.state, outcome.message);
    });
    session.on('ended', (event) => {
      if (attempt.finished) return;
      this.finish(attempt, STATES.ENDED, endedMessage({
        cause: attempt.transportLost ? 'Connection Error' : event.cause,
        hangupRequested: attempt.hangupRequested,
      }));
    });
  }

  /** Hangs up (or abandons the attempt before the INVITE went out). */
  hangup() {
    const attempt = this.attempt;
    if (!attempt || attempt.finished) return;
    attempt.hangupRequested = true;
    const session = attempt.session;
    if (session && !session.isEnded()) {
      try {
        session.terminate(); // emits failed/ended, which finish the attempt
      } catch {
        // already terminating: fall through to the local cleanup below
      }
    }
    if (!attempt.finished) this.finish(attempt, STATES.ENDED, MESSAGES[STATES.ENDED]);
  }

  /** Mutes or unmutes the microphone; returns whether it is muted now. */
  toggleMute() {
    const session = this.attempt && this.attempt.session;
    if (!session || this.state !== STATES.IN_CALL) return false;
    if (session.isMuted().audio) session.unmute({ audio: true });
    else session.mute({ audio: true });
    return session.isMuted().audio;
  }

  /** Sends one DTMF digit as SIP INFO (the gateway turns it into RFC 4733 toward the PBX). */
  sendDigit(digit) {
    const session = this.attempt && this.attempt.session;
    if (!session || this.state !== STATES.IN_CALL || !/^[0-9*#]$/.test(digit)) return false;
    try {
      session.sendDTMF(digit, { transportType: 'INFO', duration: 160, interToneGap: 80 });
      return true;
    } catch {
      return false;
    }
  }

  /** Milliseconds since the call was answered, or null before that. */
  elapsed() {
    const attempt = this.attempt;
    return attempt && attempt.answeredAt !== null ? Date.now() - attempt.answeredAt : null;
  }

  /** Back to idle after a final state (the caller closed the panel). */
  reset() {
    if (isActive(this.state)) return;
    this.setState(STATES.IDLE, MESSAGES[STATES.IDLE]);
  }

  finish(attempt, state, message) {
    if (attempt.finished) return;
    attempt.finished = true;
    clearTimeout(attempt.connectTimer);
    if (attempt.localStream) attempt.localStream.getTracks().forEach((track) => track.stop());
    if (attempt.ua) {
      const ua = attempt.ua;
      // Let a BYE or CANCEL leave before the socket closes.
      setTimeout(() => ua.stop(), attempt.session ? 1000 : 0);
    }
    if (this.attempt === attempt) this.setState(state, message);
  }

  setState(state, message) {
    this.state = state;
    this.onState(state, message);
  }
}
