// Cells and errors → chat: what the extension tells the chat panel about a cell, and the
// "Ask r3nb" button on a cell whose run failed.
//
// A cell is given to the widget as it is in the notebook (its source and outputs as JSON:
// text, and the base64 of its PNG and JPEG outputs, e.g. a matplotlib plot); the widget
// bounds it, strips ANSI colour codes and shows it as chips before anything is sent
// (js/src/cell_context.js). Nothing is read but what the notebook holds in the page. Nothing is sent from here:
// "Ask r3nb" puts the cell into the panel's input with "Why does this fail?", and the
// person presses Send.
//
//   extension → widget: root.dispatchEvent(new CustomEvent("r3nb:ask", {cancelable,
//     detail: {cell, prompt, respond}}))  on the panel's `.r3nb-root` in that notebook;
//   the widget claims it with preventDefault() and calls respond({ok, reason?}).

import { NotebookActions } from "@jupyterlab/notebook";

export const ASK_EVENT = "r3nb:ask";
const PANEL_ROOT = ".r3nb-root";
const ASK_CLASS = "r3nb-ask";
export const ASK_PROMPT = "Why does this fail?";
// Image outputs the widget may attach for a model that takes images (never SVG: a document).
const IMAGE_MIMES = ["image/png", "image/jpeg"];
// The button only shows in notebooks that show an r3nb panel: elsewhere it would offer
// nothing (and r3nb installed must not change notebooks that do not use it).
const STYLE = `
.jp-Notebook:not(:has(${PANEL_ROOT})) .${ASK_CLASS} { display: none; }
.${ASK_CLASS} { display: flex; gap: 8px; align-items: center; margin: 2px 0 4px 72px; font-size: var(--jp-ui-font-size1); }
.${ASK_CLASS} button { cursor: pointer; }
.${ASK_CLASS} span { color: var(--jp-ui-font-color2); }
`;

/**
 * A cell as the widget reads it: index, type, source, execution count and outputs
 * (stream text, text/plain of results, and errors with their traceback).
 * @param {any} notebook
 * @param {any} cell
 */
export function cellData(notebook, cell) {
  const model = cell.model;
  const outputs = [];
  if (model.type === "code") {
    for (let i = 0; i < model.outputs.length; i++) {
      const out = model.outputs.get(i).toJSON();
      const data = out.data ?? {};
      outputs.push({
        output_type: out.output_type,
        name: out.name,
        text: out.text,
        ename: out.ename,
        evalue: out.evalue,
        traceback: out.traceback,
        data: pick(data, ["text/plain", ...IMAGE_MIMES]),
        mime_types: Object.keys(data),
      });
    }
  }
  return {
    index: notebook.widgets.indexOf(cell),
    id: model.sharedModel.getId(),
    cell_type: model.type,
    source: model.sharedModel.getSource(),
    execution_count: model.type === "code" ? (model.sharedModel.execution_count ?? null) : null,
    outputs,
  };
}

/**
 * The entries of `data` named in `keys` (the others, e.g. HTML, stay in the notebook).
 * @param {Record<string, any>} data
 * @param {string[]} keys
 */
function pick(data, keys) {
  const out = {};
  for (const key of keys) if (typeof data[key] !== "undefined") out[key] = data[key];
  return out;
}

/**
 * The cells "Attach cell" means: those selected in the notebook when several are (the
 * selection before the click on the panel, which selects the panel's own cell), else
 * `fallback` (the most recently active cell). Never a cell showing an r3nb panel.
 * @param {any} notebook
 * @param {any[]} selection  remembered by `followSelection`
 * @param {any} fallback
 */
export function cellsToAttach(notebook, selection, fallback) {
  const live = selection.filter((c) => !c.isDisposed && notebook.widgets.includes(c) && !c.node.querySelector(PANEL_ROOT));
  if (live.length > 1) return live.sort((a, b) => notebook.widgets.indexOf(a) - notebook.widgets.indexOf(b));
  return fallback ? [fallback] : [];
}

/**
 * Remembers each notebook's last selection of cells that are not an r3nb panel's: a click
 * in the panel selects the panel's own cell, which must not erase the person's choice.
 * @param {any} notebook
 * @param {WeakMap<any, any[]>} selections
 */
export function followSelection(notebook, selections) {
  let queued = false;
  const remember = () => {
    queued = false;
    const active = notebook.activeCell;
    // A click in the panel's cell: the selection it leaves is not the person's choice.
    if (!active || active.node.querySelector(PANEL_ROOT)) return;
    const chosen = notebook.widgets.filter((c) => notebook.isSelectedOrActive(c) && !c.node.querySelector(PANEL_ROOT));
    if (chosen.length) selections.set(notebook, chosen);
  };
  // Read once the change is whole: a click deselects cells one by one (a signal each)
  // before it activates the clicked cell.
  const later = () => {
    if (queued) return;
    queued = true;
    void Promise.resolve().then(remember);
  };
  remember();
  notebook.selectionChanged?.connect(later);
  notebook.activeCellChanged.connect(later);
}

/** @param {any} cell */
function hasError(cell) {
  const outputs = cell.model?.outputs;
  if (!outputs) return false;
  for (let i = 0; i < outputs.length; i++) if (outputs.get(i).type === "error") return true;
  return false;
}

/**
 * Adds "Ask r3nb" under a cell whose run failed, and takes it away when the error goes.
 * @param {any} tracker  INotebookTracker
 */
export function askButtons(tracker) {
  const style = document.createElement("style");
  style.textContent = STYLE;
  document.head.append(style);
  const watched = new WeakSet();

  const update = (cell) => {
    if (cell.isDisposed) return;
    const existing = cell.node.querySelector(`:scope .${ASK_CLASS}`);
    if (!hasError(cell)) return existing?.remove();
    if (existing) return;
    // Under the outputs, not inside their wrapper: a flex row, where the button would
    // squeeze the traceback to one side and clip its own label.
    const outputs = cell.node.querySelector(".jp-Cell-outputWrapper");
    if (outputs) outputs.after(askRow(tracker, cell));
    else cell.node.append(askRow(tracker, cell));
  };

  NotebookActions.executed.connect((_, { cell }) => {
    if (!cell || cell.model?.type !== "code") return;
    update(cell);
    if (watched.has(cell)) return;
    watched.add(cell);
    cell.model.outputs.changed.connect(() => update(cell));
  });
}

/**
 * @param {any} tracker
 * @param {any} cell
 */
function askRow(tracker, cell) {
  const row = document.createElement("div");
  row.className = ASK_CLASS;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "jp-Button jp-mod-styled jp-mod-reject r3nb-ask-button";
  button.textContent = "Ask r3nb";
  button.title = "Put this cell's code and error into the r3nb panel, with a question (nothing is sent until you press Send)";
  const note = document.createElement("span");
  note.setAttribute("role", "status");
  button.addEventListener("click", () => {
    const panel = tracker.find((p) => p.node.contains(cell.node));
    note.textContent = panel ? ask(panel, cell) : "This cell is not in a notebook any more.";
  });
  row.append(button, note);
  return row;
}

/**
 * Hands the cell to the panel of its notebook; what to show beside the button.
 * @param {any} panel
 * @param {any} cell
 */
function ask(panel, cell) {
  const root = panel.node.querySelector(PANEL_ROOT);
  if (!root) return "Show the r3nb panel in this notebook first (%r3nb).";
  let answer = null;
  const event = new CustomEvent(ASK_EVENT, {
    cancelable: true,
    detail: { cell: cellData(panel.content, cell), prompt: ASK_PROMPT, respond: (r) => { answer = r; } },
  });
  if (root.dispatchEvent(event) || !answer) return "The r3nb panel did not answer.";
  return answer.ok ? "In the r3nb panel: press Send to ask." : String(answer.reason ?? "The r3nb panel refused.");
}
