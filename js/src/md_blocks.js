// Where streamed markdown may be cut without changing how it renders, and how big the
// pieces of an incremental rendering are (incremental.js says why each limit exists).
//
// A "stable" boundary is a blank line outside any open code fence or HTML block,
// confirmed by a following unindented line that does not start a list item (so list
// items and their continuations stay together): the markdown before it renders exactly
// as it would inside the whole text.

export const FENCE = /^ {0,3}(`{3,}|~{3,})/;
const LIST_ITEM = /^ {0,3}(?:[-*+]|\d{1,9}[.)])(?:[ \t]|$)/;
/** HTML blocks that, unlike others, do not end at a blank line: [opening, end condition]. */
const HTML_BLOCKS = /** @type {[RegExp, RegExp][]} */ ([
  [/^ {0,3}<!--/, /-->/],
  [/^ {0,3}<(?:script|pre|style|textarea)(?:[\s>]|$)/i, /<\/(?:script|pre|style|textarea)>/i],
  [/^ {0,3}<\?/, /\?>/],
  [/^ {0,3}<!\[CDATA\[/, /\]\]>/],
  [/^ {0,3}<![A-Za-z]/, />/],
]);
/** A table's second line. */
export const TABLE_DELIMITER = /^ {0,3}\|?(?: *:?-+:? *\|)+ *(?::?-+:? *)?$|^ {0,3}\|? *:?-+:? *\|? *$/;
/** A line that ends a table: a block that interrupts its rows (marked's rule, roughly). */
export const TABLE_END = /^(?: {4}|\t| {0,3}(?:>|#{1,6}(?:\s|$)|`{3}|~{3}|<|[-*+][ \t]|1[.)][ \t]|(?:[-*_][ \t]*){3,}$))/;
/** A link reference definition: it changes links anywhere in the text, before it too. */
export const LINK_DEFINITION = /^ {0,3}\[[^\]\n]+\]:/m;

/** Uncommitted text beyond this is cut into soft segments. */
export const SOFT_CHARS = 2000;
/** The most text rendered as markdown in one go (a commit, a soft segment). */
export const SYNC_CHARS = 8000;
/**
 * The most provisional text rendered as markdown: longer (a burst of text that arrived
 * within one frame, a long reply loaded complete) is shown as it is until its exact
 * rendering replaces it. The tail never grows past it (see `scan`).
 */
export const PROVISIONAL_CHARS = 2 * SOFT_CHARS;
/** The size of one piece of an exact rendering built over several frames. */
export const CHUNK_CHARS = 3000;
/** A block larger than this is rendered in slices instead of being lexed at once. */
export const LARGE_CHARS = 16_000;
/** The size of one slice of a large block. */
export const SLICE_CHARS = 4000;
/** The size of one slice of a large table (sanitizing its many cells is costly)... */
export const TABLE_SLICE_CHARS = 1000;
/** ...and of one part of it, laid out at once when it comes near the viewport. */
export const TABLE_PART_CHARS = 4000;
/**
 * What scanning lines needs to remember between them.
 * @typedef {object} ScanState
 * @property {string | null} fence     the open code fence's marker
 * @property {RegExp | null} htmlEnd   the end condition of the open HTML block
 * @property {number} candidate        end of a blank line that may become a boundary, or -1
 */

/**
 * Reads one complete line (without its newline) that ends the text at `next`.
 * @param {ScanState} state
 * @param {string} line
 * @param {number} next   the offset just after the line's newline
 * @returns {number}  a boundary this line confirms, or -1
 */
export function scanLine(state, line, next) {
  if (state.fence !== null) {
    const closing = line.trim();
    if (closing.length >= state.fence.length && closing === state.fence[0].repeat(closing.length)) state.fence = null;
    return -1;
  }
  if (state.htmlEnd !== null) {
    if (state.htmlEnd.test(line)) state.htmlEnd = null;
    return -1;
  }
  if (line.trim() === "") {
    state.candidate = next;
    return -1;
  }
  let boundary = -1;
  if (state.candidate !== -1) {
    if (!/^[ \t]/.test(line) && !LIST_ITEM.test(line)) boundary = state.candidate;
    state.candidate = -1;
  }
  const open = FENCE.exec(line);
  if (open) state.fence = open[1];
  else {
    for (const [start, end] of HTML_BLOCKS) {
      const m = start.exec(line);
      if (m) {
        if (!end.test(line.slice(m[0].length))) state.htmlEnd = end;
        break;
      }
    }
  }
  return boundary;
}

/**
 * Cuts complete markdown into ranges that each render exactly as inside the whole text:
 * groups of blocks of about `size` characters, and every block larger than LARGE_CHARS
 * alone (marked `large`). A text with a link definition stays whole when it is not large
 * itself: the definition may be used by any block.
 * @param {string} text
 * @param {number} size
 * @returns {{ start: number, end: number, large: boolean }[]}
 */
export function blockRanges(text, size) {
  if (text.length <= size || (text.length <= LARGE_CHARS && LINK_DEFINITION.test(text))) {
    return [{ start: 0, end: text.length, large: false }];
  }
  /** @type {ScanState} */
  const state = { fence: null, htmlEnd: null, candidate: -1 };
  const cuts = [];
  for (let pos = 0; pos < text.length; ) {
    let nl = text.indexOf("\n", pos);
    if (nl === -1) nl = text.length;
    const found = scanLine(state, text.slice(pos, nl), nl + 1);
    if (found !== -1) cuts.push(found);
    pos = nl + 1;
  }
  cuts.push(text.length);
  const ranges = [];
  let start = 0;
  let previous = 0;
  for (const cut of cuts) {
    if (cut - previous > LARGE_CHARS) {
      if (previous > start) ranges.push({ start, end: previous, large: false });
      ranges.push({ start: previous, end: cut, large: true });
      start = cut;
    } else {
      if (cut - start > LARGE_CHARS && previous > start) {
        ranges.push({ start, end: previous, large: false });
        start = previous;
      }
      if (cut - start >= size) {
        ranges.push({ start, end: cut, large: false });
        start = cut;
      }
    }
    previous = cut;
  }
  if (start < text.length) ranges.push({ start, end: text.length, large: false });
  return ranges;
}

/**
 * `text` cut into pieces of about SLICE_CHARS, at line ends where there are any, else at
 * spaces, never inside a surrogate pair.
 * @param {string} text
 * @returns {string[]}
 */
export function slices(text) {
  const pieces = [];
  let start = 0;
  while (text.length - start > SLICE_CHARS) {
    const limit = start + SLICE_CHARS;
    let cut = text.lastIndexOf("\n", limit) + 1;
    if (cut <= start + SLICE_CHARS / 2) cut = text.lastIndexOf(" ", limit) + 1;
    if (cut <= start + SLICE_CHARS / 2) cut = /[\uD800-\uDBFF]/.test(text[limit - 1]) ? limit - 1 : limit;
    pieces.push(text.slice(start, cut));
    start = cut;
  }
  if (start < text.length) pieces.push(text.slice(start));
  return pieces;
}
