// Code → cell: "Insert below", "Replace cell" and "Insert & run" on the code blocks of
// replies, through r3nb's JupyterLab extension (labextension/, shipped in the wheel).
//
// The widget never touches the notebook itself and sets no globals. It asks with a DOM
// event from its own element, which the extension (listening on `document`) claims and
// answers:
//
//   el.dispatchEvent(new CustomEvent("r3nb:notebook", {bubbles, composed, cancelable,
//     detail: {action: "probe" | "insert-below" | "replace-active" | "insert-and-run",
//              code: string, respond(result)}}))
//   the extension calls event.preventDefault() (it answers) and then
//   detail.respond({ok: true, version} | {ok: false, reason, version}), once.
//
// An event nobody claims means no extension (VS Code, Colab, a plain page, a JupyterLab
// without it): the blocks keep Copy and one note in the panel says why there is no more.
//
// What goes into a cell is the block's text as shown (`pre.textContent`): highlighting
// and HTML never reach it, and nothing is stripped. A block whose text holds characters
// that show nothing (zero-width, bidirectional controls, tags, variation selectors…) is
// not offered for cells at all: the person could not have read what would run. Its
// toolbar says so, naming the characters; Copy still copies the text as it is.

import { h } from "./dom.js";

export const NOTEBOOK_EVENT = "r3nb:notebook";
/** The reason when nothing answers: no extension on this page. */
export const NO_EXTENSION = "no-extension";
/** The reason when the panel is not in the page (yet): ask again later. */
export const DETACHED = "detached";

/** @typedef {"probe" | "insert-below" | "replace-active" | "insert-and-run" | "active-cell" | "selected-cells" | "replace-cell"} NotebookAction */
/** The cell a reply's question had attached (notebook_context.js): "Replace that cell". */
/** @typedef {{ id: string, name: string }} TargetCell */
/** @typedef {{ ok: boolean, reason: string, version: string, cell?: unknown, cells?: unknown[] }} NotebookReply */

/** The actions a code block offers: [action, label, aria-label, what it says when done]. */
const ACTIONS = /** @type {const} */ ([
  ["insert-below", "Insert below", "Insert this code in a new cell below the active cell", "Inserted"],
  ["replace-active", "Replace cell", "Replace the code of the active cell with this code", "Replaced"],
  ["insert-and-run", "Insert & run", "Insert this code in a new cell below the active cell and run that cell", "Inserted, running"],
]);

const NOTE_TEXT = "Insert into cells needs r3nb's JupyterLab extension (JupyterLab 4 or Notebook 7); Copy works here.";

/**
 * Asks the notebook the element lives in, through the extension. Never rejects.
 * @param {Element} from          an element of the panel (the event starts there)
 * @param {NotebookAction} action
 * @param {string} [code]
 * @param {number} [timeoutMs]    how long an extension that claimed the event may take
 * @param {Record<string, string>} [extra]  more of the detail ("replace-cell": cellId)
 * @returns {Promise<NotebookReply>}
 */
export function askNotebook(from, action, code = "", timeoutMs = 10_000, extra = {}) {
  return new Promise((resolve) => {
    /** @type {{ done: boolean, timer?: ReturnType<typeof setTimeout> }} */
    const state = { done: false };
    /** @param {unknown} reply */
    const finish = (reply) => {
      if (state.done) return;
      state.done = true;
      clearTimeout(state.timer);
      resolve(normalize(reply));
    };
    if (!from.isConnected) return finish({ ok: false, reason: DETACHED });
    const View = /** @type {Window & typeof globalThis} */ (from.ownerDocument.defaultView);
    const event = new View.CustomEvent(NOTEBOOK_EVENT, {
      bubbles: true,
      composed: true,
      cancelable: true,
      detail: { ...extra, action, code, respond: finish },
    });
    const claimed = !from.dispatchEvent(event);
    if (!claimed) return finish({ ok: false, reason: NO_EXTENSION });
    if (!state.done) state.timer = setTimeout(() => finish({ ok: false, reason: "the notebook did not answer" }), timeoutMs);
  });
}

/**
 * @param {unknown} reply
 * @returns {NotebookReply}
 */
function normalize(reply) {
  const r = /** @type {Record<string, unknown>} */ (reply && typeof reply === "object" ? reply : {});
  const ok = r.ok === true;
  const reason = typeof r.reason === "string" ? r.reason : ok ? "" : "the notebook refused";
  /** @type {NotebookReply} */
  const out = { ok, reason, version: typeof r.version === "string" ? r.version : "" };
  if (ok && r.cell && typeof r.cell === "object") out.cell = r.cell; // "active-cell"
  if (ok && Array.isArray(r.cells)) out.cells = r.cells; // "selected-cells"
  return out;
}

// Characters that show nothing (or change how their neighbours show) in a code block:
// format characters (zero-width spaces and joiners, bidirectional controls, tags, the soft
// hyphen, the BOM), control characters other than tab and newlines, line and paragraph
// separators, variation selectors, and the Hangul fillers that render as blank.
const INVISIBLE = /[\p{Cf}\p{Cc}\p{Zl}\p{Zp}\p{Variation_Selector}\u115F\u1160\u3164\uFFA0]/gu;
// Emoji sequences legitimately hold joiners and variation selectors: they show.
const EMOJI = /\p{Extended_Pictographic}(?:\uFE0E|\uFE0F)?\p{Emoji_Modifier}?(?:\u200D\p{Extended_Pictographic}(?:\uFE0E|\uFE0F)?\p{Emoji_Modifier}?)*/gu;

/**
 * The characters of `text` a reader cannot see, as "U+200B" (each once, in order).
 * @param {string} text
 * @returns {string[]}
 */
export function invisibleCharacters(text) {
  const found = new Set();
  for (const [ch] of text.replace(EMOJI, "").matchAll(INVISIBLE)) {
    if (ch === "\t" || ch === "\n" || ch === "\r") continue;
    found.add(`U+${(ch.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, "0")}`);
  }
  return [...found];
}

/**
 * The cell buttons of every code block in the replies of one panel's message list.
 * `decorate` is called with what was added or changed (MessageExtras' observer).
 */
export class CellActions {
  /**
   * @param {HTMLElement} list
   * @param {AbortSignal} signal
   * @param {(messageId: string) => TargetCell | null} [cellFor]  the cell a reply's question attached
   */
  constructor(list, signal, cellFor = () => null) {
    this.list = list;
    this.signal = signal;
    this.cellFor = cellFor;
    /** @type {"unknown" | "probing" | "yes" | "no"} */
    this.state = "unknown";
    /** Why cell actions are off ("" while unknown or on). */
    this.reason = "";
    this.version = "";
    this.retries = 0;
    /** @type {Set<ReturnType<typeof setTimeout>>} */
    this.timers = new Set();
    list.addEventListener("click", (e) => this.onClick(e), { signal });
    signal.addEventListener("abort", () => {
      for (const timer of this.timers) clearTimeout(timer);
    }, { once: true });
  }

  /** @param {Element} root  a message, part of one, or the whole list */
  decorate(root) {
    if (this.signal.aborted) return;
    const blocks = codeBlocks(root);
    if (!blocks.length) return;
    if (this.state === "unknown") return void this.probe();
    if (this.state === "probing") return;
    for (const block of blocks) {
      if (this.state === "yes") this.addToolbar(block);
      else this.addNote(block);
    }
  }

  async probe() {
    this.state = "probing";
    const reply = await askNotebook(this.list, "probe");
    if (this.signal.aborted) return;
    if (reply.reason === DETACHED) {
      // Not in the page yet (or a detached second view): look again shortly, for a while.
      this.state = "unknown";
      if (this.retries++ < 20) this.later(() => this.decorate(this.list), 500);
      return;
    }
    this.state = reply.ok ? "yes" : "no";
    this.version = reply.version;
    this.reason = reply.ok ? "" : reply.reason === NO_EXTENSION ? NOTE_TEXT : `Insert into cells is off: ${reply.reason}.`;
    this.list.dataset.cellActions = this.state === "yes" ? "on" : "off";
    this.decorate(this.list);
  }

  /**
   * "Insert into cells needs…", once in the list (on the first block that lacks cell
   * buttons), not on every block.
   * @param {HTMLElement} block
   */
  addNote(block) {
    if (this.list.querySelector(".r3nb-cells-note")) return;
    block.append(h(block.ownerDocument, "p", { class: "r3nb-cells-note", role: "note" }, [this.reason]));
  }

  /** @param {HTMLElement} block */
  addToolbar(block) {
    const doc = block.ownerDocument;
    let bar = /** @type {HTMLElement | null} */ (block.querySelector(":scope > .r3nb-cell-actions"));
    if (!bar) {
      bar = h(doc, "div", { class: "r3nb-cell-actions", role: "group", "aria-label": "Put this code into the notebook" }, [
        ...ACTIONS.map(([action, label, aria]) =>
          h(doc, "button", { type: "button", class: "r3nb-cell-action", "data-action": action, "aria-label": aria }, [label])),
        h(doc, "span", { class: "r3nb-cell-status", role: "status" }),
      ]);
      block.append(bar);
    }
    this.addReplaceThatCell(block, bar);
    // Checked again when the reply has ended: a block still being written may grow.
    if (!streaming(block)) this.checkVisible(block, bar);
  }

  /**
   * "Replace cell [3]" when the question of this reply attached that cell: the answer to
   * "why does this fail?" goes back where the code came from (one step of undo too).
   * @param {HTMLElement} block
   * @param {HTMLElement} bar
   */
  addReplaceThatCell(block, bar) {
    if (bar.querySelector("[data-action=replace-cell]")) return;
    const id = block.closest("[data-r3nb-role=message]")?.getAttribute("data-message-id") ?? "";
    const target = id ? this.cellFor(id) : null;
    if (!target) return;
    const button = h(block.ownerDocument, "button", {
      type: "button", class: "r3nb-cell-action", "data-action": "replace-cell", "data-cell-id": target.id,
      "aria-label": `Replace the code of ${target.name}, the cell attached to the question, with this code`,
    }, [`Replace ${target.name}`]);
    bar.insertBefore(button, bar.querySelector(".r3nb-cell-status"));
  }

  /**
   * Turns the buttons off, saying why, when the block's text holds invisible characters.
   * @param {HTMLElement} block
   * @param {HTMLElement} bar
   * @returns {boolean}  whether the text may go into a cell
   */
  checkVisible(block, bar) {
    const hidden = invisibleCharacters(blockText(block));
    if (!hidden.length) return true;
    for (const button of bar.querySelectorAll("button")) button.disabled = true;
    bar.dataset.refused = "invisible";
    const shown = hidden.slice(0, 4).join(", ") + (hidden.length > 4 ? ", …" : "");
    setStatus(bar, `Not offered for cells: this code holds characters that show nothing (${shown}). Copy copies it as it is.`);
    return false;
  }

  /** @param {MouseEvent} event */
  async onClick(event) {
    const target = /** @type {Element | null} */ (event.target);
    const button = /** @type {HTMLButtonElement | null} */ (target?.nodeType === 1 ? target.closest(".r3nb-cell-action") : null);
    const bar = /** @type {HTMLElement | null} */ (button?.parentElement ?? null);
    const block = /** @type {HTMLElement | null} */ (bar?.parentElement ?? null);
    if (!button || !bar || !block || button.disabled || !this.list.contains(button)) return;
    if (!this.checkVisible(block, bar)) return;
    const entry = button.dataset.action === "replace-cell"
      ? /** @type {const} */ (["replace-cell", "", "", "Replaced"])
      : ACTIONS.find(([action]) => action === button.dataset.action);
    if (!entry) return;
    const buttons = Array.from(bar.querySelectorAll("button"));
    for (const b of buttons) b.disabled = true;
    /** @type {Record<string, string>} */
    const extra = entry[0] === "replace-cell" ? { cellId: button.dataset.cellId ?? "" } : {};
    const reply = await askNotebook(button, entry[0], blockText(block), 10_000, extra);
    if (this.signal.aborted) return;
    for (const b of buttons) b.disabled = false;
    if (reply.reason === NO_EXTENSION || reply.reason === DETACHED) {
      setStatus(bar, "The notebook is not reachable from here any more: use Copy.");
    } else {
      setStatus(bar, reply.ok ? entry[3] : capitalize(reply.reason));
    }
    bar.dataset.result = reply.ok ? "ok" : "refused";
    this.later(() => {
      if (bar.dataset.refused) return;
      setStatus(bar, "");
      delete bar.dataset.result;
    }, reply.ok ? 2000 : 6000);
  }

  /**
   * @param {() => void} fn
   * @param {number} ms
   */
  later(fn, ms) {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      if (!this.signal.aborted) fn();
    }, ms);
    this.timers.add(timer);
  }
}

/**
 * The code blocks of replies in `root` (root itself may be one, or inside one).
 * @param {Element} root
 * @returns {HTMLElement[]}
 */
function codeBlocks(root) {
  const inside = root.closest(".r3nb-code");
  const blocks = inside ? [inside] : Array.from(root.querySelectorAll(".r3nb-code"));
  return /** @type {HTMLElement[]} */ (blocks.filter((b) => b.closest("[data-r3nb-role=message]")?.getAttribute("data-role") === "assistant" && b.querySelector(":scope > pre")));
}

/**
 * What the block shows: the text of its `pre`, nothing else (not the language label, not
 * our buttons), with nothing stripped.
 * @param {HTMLElement} block
 */
export function blockText(block) {
  return block.querySelector(":scope > pre")?.textContent ?? "";
}

/** @param {HTMLElement} block */
function streaming(block) {
  return block.closest("[data-r3nb-role=message]")?.getAttribute("data-status") === "streaming";
}

/**
 * @param {HTMLElement} bar
 * @param {string} text
 */
function setStatus(bar, text) {
  const status = bar.querySelector(".r3nb-cell-status");
  if (status && status.textContent !== text) status.textContent = text;
}

/** @param {string} text */
function capitalize(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
