// A jsdom window for the widget's tests, without jsdom 29's quadratic listener pile-up.
//
// jsdom's selector engine (@asamuzakjp/dom-selector 7) adds seven capture listeners to the
// window for every document created in it, and never removes them; jsdom's
// addEventListener then walks every listener already there. DOMPurify creates a document
// per sanitize call, so a test streaming a long reply spent half its time in
// addEventListener (20,000 tokens: 2.2 of 4.4 s). Only the first document's listeners
// (the page's own) are kept; the throwaway documents' would only track focus and pointer
// state for selectors matched in them. Browsers have no such engine (measured in
// Chromium by the browser tests); jsdom 31 needs Node 22.

import { JSDOM } from "jsdom";

/** @param {string} html @param {object} [options] */
export function makeDom(html, options) {
  const dom = new JSDOM(html, options);
  const win = dom.window;
  const add = win.addEventListener;
  const kept = new Set();
  win.addEventListener = function (type, listener, opts) {
    if (typeof listener === "function" && /^_handle\w*Event$/.test(listener.name)) {
      if (kept.has(type)) return undefined;
      kept.add(type);
    }
    return add.call(this, type, listener, opts);
  };
  return dom;
}
