// Finding the fake microphone's tone again in what the gateway sends back: a WebAudio AnalyserNode on the
// widget's remote stream measures the spectrum in the page (averaged over a while), and pure functions here
// find its peak and decide whether it is the expected tone.

/** Lowest and highest frequency searched: the telephone band G.711 carries. */
const BAND_HZ = [100, 3800];
/** How far the peak must stand above the band's median level to count as a tone rather than noise. */
const MIN_PROMINENCE_DB = 30;
/** Quieter than this is silence, whatever its shape. */
const MIN_PEAK_DB = -80;

/**
 * Measures the average power spectrum of `window[owner].remoteStream` (the widget's by default) for
 * `durationMs`: an AnalyserNode with a 32768-point FFT (1.46 Hz bins at 48 kHz), read every 100 ms once its
 * window is full. Returns `{ sampleRate, fftSize, frames, spectrumDb }`, or null when there is no remote
 * stream.
 */
export function measureRemoteSpectrum(page, durationMs = 1500, owner = 'callgateWidget') {
  return page.evaluate(async ([duration, holder]) => {
    const stream = window[holder].remoteStream;
    if (!stream) return null;
    const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
    const context = new AudioContext();
    await context.resume();
    const analyser = context.createAnalyser();
    analyser.fftSize = 32768;
    analyser.smoothingTimeConstant = 0;
    context.createMediaStreamSource(stream).connect(analyser);
    await sleep((1000 * analyser.fftSize) / context.sampleRate);
    const frame = new Float32Array(analyser.frequencyBinCount);
    const power = new Float64Array(analyser.frequencyBinCount);
    let frames = 0;
    const end = performance.now() + duration;
    while (performance.now() < end) {
      analyser.getFloatFrequencyData(frame);
      for (let bin = 0; bin < frame.length; bin += 1) power[bin] += 10 ** (frame[bin] / 10);
      frames += 1;
      await sleep(100);
    }
    const result = {
      sampleRate: context.sampleRate,
      fftSize: analyser.fftSize,
      frames,
      spectrumDb: Array.from(power, (sum) => 10 * Math.log10(sum / frames)),
    };
    await context.close();
    return result;
  }, [durationMs, owner]);
}

/**
 * The strongest frequency of a measured spectrum within the telephone band, refined between bins by a
 * parabola through the peak bin and its neighbours: `{ hz, db, medianDb }`.
 */
export function spectrumPeak({ sampleRate, fftSize, spectrumDb }) {
  const binHz = sampleRate / fftSize;
  const first = Math.ceil(BAND_HZ[0] / binHz);
  const last = Math.min(Math.floor(BAND_HZ[1] / binHz), spectrumDb.length - 2);
  let peak = first;
  for (let bin = first; bin <= last; bin += 1) {
    if (spectrumDb[bin] > spectrumDb[peak]) peak = bin;
  }
  const [left, centre, right] = [spectrumDb[peak - 1], spectrumDb[peak], spectrumDb[peak + 1]];
  const curvature = left - 2 * centre + right;
  const offset = Number.isFinite(curvature) && curvature < 0 ? (0.5 * (left - right)) / curvature : 0;
  const band = spectrumDb.slice(first, last + 1).sort((a, b) => a - b);
  return { hz: (peak + offset) * binHz, db: centre, medianDb: band[Math.floor(band.length / 2)] };
}

/**
 * Whether `peak` (from spectrumPeak) is a tone at `expectedHz` ± `toleranceHz`: the strongest frequency is
 * there, loud enough, and well above the rest of the band.
 */
export function toneMatches(peak, expectedHz, toleranceHz = 5) {
  return Number.isFinite(peak.db)
    && peak.db > MIN_PEAK_DB
    && peak.db - peak.medianDb >= MIN_PROMINENCE_DB
    && Math.abs(peak.hz - expectedHz) <= toleranceHz;
}
