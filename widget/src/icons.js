// Inline SVG icons (paths after Material Icons, Apache-2.0). aria-hidden: the buttons carry the labels.

const svg = (body) =>
  `<svg viewBox="0 0 24 24" width="24" height="24" aria-hidden="true" focusable="false">${body}</svg>`;

const HANDSET = 'M6.62 10.79c1.44 2.83 3.76 5.14 6.59 6.59l2.2-2.2c.27-.27.67-.36 1.02-.24 1.12.37 2.33.57 '
  + '3.57.57.55 0 1 .45 1 1V20c0 .55-.45 1-1 1-9.39 0-17-7.61-17-17 0-.55.45-1 1-1h3.5c.55 0 1 .45 1 1 0 '
  + '1.25.2 2.45.57 3.57.11.35.03.74-.25 1.02l-2.2 2.2z';
const MIC = 'M12 14c1.66 0 2.99-1.34 2.99-3L15 5c0-1.66-1.34-3-3-3S9 3.34 9 5v6c0 1.66 1.34 3 3 3zm5.3-3c0 '
  + '3-2.54 5.1-5.3 5.1S6.7 14 6.7 11H5c0 3.41 2.72 6.23 6 6.72V21h2v-3.28c3.28-.48 6-3.3 6-6.72h-1.7z';

export const PHONE_ICON = svg(`<path fill="currentColor" d="${HANDSET}"/>`);
// The handset turned down: the usual hang-up sign.
export const HANGUP_ICON = svg(`<path fill="currentColor" transform="rotate(135 12 12)" d="${HANDSET}"/>`);
export const MIC_ICON = svg(`<path fill="currentColor" d="${MIC}"/>`);
export const MIC_OFF_ICON = svg(`<path fill="currentColor" d="${MIC}"/>`
  + '<path d="M4 3.5 20.5 20" stroke="currentColor" stroke-width="2.2" stroke-linecap="round"/>');
export const CLOSE_ICON = svg('<path d="M6 6l12 12M18 6 6 18" stroke="currentColor" stroke-width="2.2" '
  + 'stroke-linecap="round"/>');
