// A website's own softphone built on SIP.js (not our widget): what a site that already uses SIP.js does with
// callgate. Bundled for the browser by e2e-sipjs.mjs. It places an anonymous call with SIP.js's UserAgent and
// Inviter, exposes the call's state and remote stream in `window.sipjsCall` for the test, and takes no
// settings beyond the WebSocket server and target the test passes to `startCall`.
import { Inviter, SessionState, UserAgent } from 'sip.js';

window.sipjsCall = { state: 'idle', states: [], remoteStream: null, error: null };

window.startCall = async (server, target) => {
  const call = window.sipjsCall;
  const userAgent = new UserAgent({
    transportOptions: { server },
    sessionDescriptionHandlerFactoryOptions: { peerConnectionConfiguration: { iceServers: [] } },
    logLevel: 'warn',
  });
  await userAgent.start();
  const inviter = new Inviter(userAgent, UserAgent.makeURI(target), {
    sessionDescriptionHandlerOptions: { constraints: { audio: true, video: false } },
  });
  inviter.stateChange.addListener((state) => {
    call.state = state;
    call.states.push(state);
    if (state === SessionState.Established) {
      const stream = new MediaStream();
      for (const receiver of inviter.sessionDescriptionHandler.peerConnection.getReceivers()) {
        if (receiver.track) stream.addTrack(receiver.track);
      }
      call.remoteStream = stream;
      // Chromium only delivers a remote WebRTC track's audio once something plays it, as any softphone does.
      const player = new Audio();
      player.srcObject = stream;
      player.play();
    }
  });
  call.hangUp = () => inviter.bye();
  try {
    await inviter.invite();
  } catch (error) {
    call.error = String(error);
  }
};
