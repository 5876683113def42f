// Entry point of the bundle (an IIFE): find the snippet's <script>, read its settings, render the widget.

import { findOwnScript, markMounted, readSettings } from './config.js';
import { mountWidget } from './view.js';

const script = findOwnScript(document);
if (script) {
  markMounted(script);
  const settings = readSettings(script.dataset, script.src, document.baseURI);
  if (settings.error) {
    console.error(`callgate widget: ${settings.error}`);
  } else {
    const mount = () => {
      const widget = mountWidget(document, settings);
      // The last widget mounted; callgateWidgets keeps all of them for pages that embed several.
      window.callgateWidget = widget;
      window.callgateWidgets = (window.callgateWidgets || []).concat(widget);
    };
    if (document.body) mount();
    else document.addEventListener('DOMContentLoaded', mount, { once: true });
  }
}
