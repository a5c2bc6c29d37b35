// Cells and errors → chat: what the extension tells the chat panel about a cell, and the
// "Ask r3nb" button on a cell whose run failed.
//
// A cell is given to the widget as it is in the notebook (its source and outputs as JSON,
// text only: no image data); the widget bounds it, strips ANSI colour codes and shows it
// as a chip before anything is sent (js/src/cell_context.js). Nothing is sent from here:
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
        data: typeof data["text/plain"] === "undefined" ? {} : { "text/plain": data["text/plain"] },
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
    const wrapper = cell.node.querySelector(".jp-Cell-outputWrapper") ?? cell.node;
    wrapper.append(askRow(tracker, cell));
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
