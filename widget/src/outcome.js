// What the caller is told: the widget states and the mapping from how a JsSIP session ended to one of them.
// Pure functions, tested under node by tests/unit.test.mjs.

/** Every state the widget can be in; `callgate:state` events and window.callgateWidget.state carry these. */
export const STATES = Object.freeze({
  IDLE: 'idle',
  CONNECTING: 'connecting',
  RINGING: 'ringing',
  IN_CALL: 'in-call',
  ENDED: 'ended',
  MIC_DENIED: 'mic-denied',
  UNREACHABLE: 'unreachable',
  BUSY: 'busy',
  NO_ANSWER: 'no-answer',
  REFUSED: 'refused',
  FAILED: 'failed',
});

/** States in which a call (or the attempt to place one) is under way and hang-up makes sense. */
export function isActive(state) {
  return state === STATES.CONNECTING || state === STATES.RINGING || state === STATES.IN_CALL;
}

/** States that end an attempt and show a message until the caller closes the panel or calls again. */
export function isFinal(state) {
  return !isActive(state) && state !== STATES.IDLE;
}

export const MESSAGES = Object.freeze({
  [STATES.IDLE]: '',
  [STATES.CONNECTING]: 'Connecting…',
  [STATES.RINGING]: 'Ringing…',
  [STATES.IN_CALL]: 'In call',
  [STATES.ENDED]: 'Call ended',
  [STATES.MIC_DENIED]:
    'Microphone access was denied. Allow the microphone for this site in your browser, then call again.',
  [STATES.UNREACHABLE]: 'Cannot reach the call service. Check your connection and try again.',
  [STATES.BUSY]: 'The line is busy. Please try again later.',
  [STATES.NO_ANSWER]: 'No answer. Please try again later.',
  [STATES.REFUSED]: 'Calls are not available right now.',
  [STATES.FAILED]: 'The call could not be connected.',
});

/** A Retry-After value (seconds) as a sentence, or '' when there is none worth telling. */
export function retryAfterSentence(retryAfter) {
  const seconds = Number.parseInt(String(retryAfter ?? ''), 10);
  if (!Number.isFinite(seconds) || seconds <= 0) return '';
  if (seconds < 90) return ` Please try again in ${seconds} second${seconds === 1 ? '' : 's'}.`;
  const minutes = Math.round(seconds / 60);
  return ` Please try again in about ${minutes} minutes.`;
}

/**
 * Which state a failed call attempt (JsSIP session 'failed', before answer) ends in.
 *
 * - `statusCode`: the final SIP response when the remote side refused, else null.
 * - `cause`: JsSIP's cause string ('Canceled', 'Connection Error', …).
 * - `hangupRequested`: the caller pressed hang-up. JsSIP reports a transport error or Timer B during the
 *   INVITE as a local 'Canceled' too, so only this flag tells a cancel by the caller from a lost gateway.
 * - `transportLost`: the WebSocket closed during the attempt.
 */
export function classifyFailure({ statusCode = null, cause = '', retryAfter = null, hangupRequested = false,
  transportLost = false }) {
  if (statusCode !== null && statusCode !== undefined) {
    if (statusCode === 486 || statusCode === 600 || statusCode === 603) {
      return { state: STATES.BUSY, message: MESSAGES[STATES.BUSY] };
    }
    if (statusCode === 408 || statusCode === 480 || statusCode === 487) {
      return { state: STATES.NO_ANSWER, message: MESSAGES[STATES.NO_ANSWER] };
    }
    if (statusCode === 403 || statusCode === 404 || statusCode === 503) {
      return { state: STATES.REFUSED, message: MESSAGES[STATES.REFUSED] + retryAfterSentence(retryAfter) };
    }
    return { state: STATES.FAILED, message: MESSAGES[STATES.FAILED] };
  }
  if (hangupRequested) return { state: STATES.ENDED, message: MESSAGES[STATES.ENDED] };
  if (transportLost || cause === 'Connection Error' || cause === 'Request Timeout' || cause === 'Canceled') {
    return { state: STATES.UNREACHABLE, message: MESSAGES[STATES.UNREACHABLE] };
  }
  if (cause === 'User Denied Media Access') {
    return { state: STATES.MIC_DENIED, message: MESSAGES[STATES.MIC_DENIED] };
  }
  return { state: STATES.FAILED, message: MESSAGES[STATES.FAILED] };
}

/** The message for an answered call that ended (JsSIP session 'ended'). */
export function endedMessage({ cause = '', hangupRequested = false }) {
  if (hangupRequested || cause === 'Terminated') return MESSAGES[STATES.ENDED];
  if (cause === 'Connection Error' || cause === 'RTP Timeout' || cause === 'Request Timeout') {
    return 'Call ended: the connection was lost.';
  }
  return MESSAGES[STATES.ENDED];
}

/** Which state a getUserMedia rejection ends in, with its message. */
export function classifyMicrophoneError(error) {
  const name = error && error.name;
  if (name === 'NotAllowedError' || name === 'SecurityError' || name === 'PermissionDeniedError') {
    return { state: STATES.MIC_DENIED, message: MESSAGES[STATES.MIC_DENIED] };
  }
  if (name === 'NotFoundError' || name === 'OverconstrainedError') {
    return { state: STATES.FAILED, message: 'No microphone was found. Connect one and try again.' };
  }
  if (name === 'NotReadableError') {
    return { state: STATES.FAILED, message: 'The microphone is in use by another application.' };
  }
  return { state: STATES.FAILED, message: MESSAGES[STATES.FAILED] };
}

/** Call duration as mm:ss (h:mm:ss from an hour on). */
export function formatDuration(milliseconds) {
  const total = Math.max(0, Math.floor(milliseconds / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = String(total % 60).padStart(2, '0');
  if (hours > 0) return `${hours}:${String(minutes).padStart(2, '0')}:${seconds}`;
  return `${String(minutes).padStart(2, '0')}:${seconds}`;
}
