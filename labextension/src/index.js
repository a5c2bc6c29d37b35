// r3nb's JupyterLab 4 / Notebook 7 extension: puts the code of a chat reply into the
// notebook the chat panel lives in, when the person clicks one of the code block's buttons.
//
// The protocol (README, "Code into cells"), with no globals on either side:
//
//   The widget dispatches a bubbling, cancelable CustomEvent "r3nb:notebook" from its own
//   element, detail = {action, code, respond}:
//     action   "probe" | "insert-below" | "replace-active" | "insert-and-run" | "active-cell"
//              | "selected-cells" | "replace-cell" (with detail.cellId: the cell a question attached)
//     code     the code block's text, exactly as shown (ignored by "probe", "active-cell")
//     respond  called once with {ok: true, version} or {ok: false, reason, version};
//              "active-cell" answers {ok: true, cell, version} (context.js's cellData),
//              "selected-cells" {ok: true, cells, version}: the cells selected when several
//              are, else the active one
//   This extension listens on `document`, claims the event with preventDefault() (so the
//   widget knows, synchronously, that someone answers) and responds before returning.
//
// Each change is one step of the notebook's own undo (`z` in command mode, Edit → Undo
// Cell Operation): the cell insertion, or the replacement of a cell's code and outputs,
// is one transaction on the notebook's shared model. Nothing runs unless the action is
// "insert-and-run", and then only the cell it inserted.

import { INotebookTracker, NotebookActions } from "@jupyterlab/notebook";

import { askButtons, cellData, cellsToAttach, followSelection } from "./context.js";
import { staleHints } from "./stale_panel.js";

const EVENT = "r3nb:notebook";
// Kept equal to package.json's version (tests/test_packaging.py checks it).
const VERSION = "0.1.0";
const ACTIONS = new Set(["probe", "insert-below", "replace-active", "insert-and-run", "active-cell", "selected-cells", "replace-cell"]);
const PANEL_ROOT = ".r3nb-root";
// How many recently active cells each notebook remembers (see workCell).
const HISTORY = 8;

// A JupyterFrontEndPlugin: JupyterLab 4 and Notebook 7 both provide INotebookTracker.
const plugin = {
  id: "r3nb:notebook-cells",
  description: "Puts code from an r3nb chat reply into notebook cells, on the person's click.",
  autoStart: true,
  requires: [INotebookTracker],
  activate: (_app, tracker) => {
    const recent = new WeakMap();
    const selections = new WeakMap();
    const follow = (panel) => {
      const notebook = panel.content;
      const remember = () => {
        const cell = notebook.activeCell;
        if (!cell) return;
        const cells = (recent.get(notebook) ?? []).filter((c) => c !== cell && !c.isDisposed);
        cells.push(cell);
        recent.set(notebook, cells.slice(-HISTORY));
      };
      remember();
      notebook.activeCellChanged.connect(remember);
      followSelection(notebook, selections);
    };
    tracker.forEach(follow);
    tracker.widgetAdded.connect((_, panel) => follow(panel));
    askButtons(tracker);
    staleHints(tracker);

    document.addEventListener(EVENT, (event) => {
      const detail = event instanceof CustomEvent ? event.detail : null;
      if (!detail || typeof detail.respond !== "function" || !ACTIONS.has(detail.action)) return;
      event.preventDefault();
      let result;
      try {
        result = act(tracker, { recent, selections }, event.target, detail);
      } catch (err) {
        result = { ok: false, reason: `the notebook refused: ${err instanceof Error ? err.message : err}` };
      }
      detail.respond({ ...result, version: VERSION });
    });
  },
};

function act(tracker, { recent, selections }, target, { action, code, cellId }) {
  const panel = target instanceof Node ? tracker.find((p) => p.node.contains(target)) : undefined;
  if (!panel) return { ok: false, reason: "this panel is not inside a notebook" };
  if (action === "probe") return { ok: true };
  const notebook = panel.content;
  const model = notebook.model;
  if (typeof code !== "string") return { ok: false, reason: "no code was given" };
  if (!model || notebook.isDisposed) return { ok: false, reason: "the notebook is not ready" };
  const work = workCell(notebook, recent);
  if (action === "active-cell") {
    // Read-only: the cell's text as the notebook holds it, for the panel to attach.
    if (!work) return { ok: false, reason: "click the cell to attach first" };
    return { ok: true, cell: cellData(notebook, work) };
  }
  if (action === "selected-cells") {
    const cells = cellsToAttach(notebook, selections.get(notebook) ?? [], work);
    if (!cells.length) return { ok: false, reason: "click the cell to attach first (Shift+click selects several)" };
    return { ok: true, cells: cells.map((cell) => cellData(notebook, cell)) };
  }
  if (model.readOnly) return { ok: false, reason: "the notebook is read-only" };
  if (action === "replace-cell") {
    // The cell a question attached ("Replace that cell"), found by its id, wherever it is now.
    const cell = notebook.widgets.find((c) => c.model.sharedModel.getId() === cellId);
    if (!cell) return { ok: false, reason: "that cell is not in this notebook any more" };
    if (cell.model.type !== "code") return { ok: false, reason: "that cell is not a code cell" };
    replace(notebook, cell, code);
    return { ok: true };
  }
  if (action === "replace-active") {
    if (!work) return { ok: false, reason: "click the cell to replace first" };
    if (work.model.type !== "code") return { ok: false, reason: "the active cell is not a code cell" };
    replace(notebook, work, code);
    return { ok: true };
  }
  const host = notebook.widgets.find((cell) => cell.node.contains(target));
  const cell = insertBelow(notebook, work ?? host, code);
  if (action === "insert-and-run") {
    // Answered once the run is asked for, not when it ends; a failed run shows in the cell.
    NotebookActions.runCells(notebook, [cell], panel.sessionContext).catch((err) => {
      console.warn("r3nb: running the inserted cell failed", err);
    });
  }
  return { ok: true };
}

/**
 * The cell a person means by "the active cell". Pressing a button in the panel makes the
 * panel's own cell active (JupyterLab activates the cell of any click or focus inside it),
 * so this is the most recently active cell that shows no r3nb panel and is still there;
 * null when there is none (then Insert goes below the panel's cell).
 */
function workCell(notebook, recent) {
  const cells = recent.get(notebook) ?? [];
  for (let i = cells.length - 1; i >= 0; i--) {
    const cell = cells[i];
    if (!cell.isDisposed && notebook.widgets.includes(cell) && !cell.node.querySelector(PANEL_ROOT)) return cell;
  }
  return null;
}

/** A new code cell holding `code` below `after` (at the end without one): one undo step. */
function insertBelow(notebook, after, code) {
  const shared = notebook.model.sharedModel;
  const index = after ? notebook.widgets.indexOf(after) + 1 : notebook.widgets.length;
  separateUndoStep(shared, () => {
    // Like JupyterLab's own Insert Below: a cell the person created is trusted.
    shared.insertCell(index, { cell_type: "code", source: code, metadata: { trusted: true } });
  });
  notebook.deselectAll();
  notebook.activeCellIndex = index;
  return notebook.widgets[index];
}

/** `cell`'s code becomes `code`, its outputs (of the old code) go: one undo step. */
function replace(notebook, cell, code) {
  const shared = notebook.model.sharedModel;
  const cellModel = cell.model.sharedModel;
  separateUndoStep(shared, () => {
    // Inside the notebook's transaction, the cell's changes carry the notebook as their
    // origin: the notebook's undo (`z`) takes them back, outputs included.
    shared.transact(() => {
      cellModel.setSource(code);
      cellModel.setOutputs([]);
      cellModel.execution_count = null;
    });
  });
  notebook.deselectAll();
  notebook.activeCellIndex = notebook.widgets.indexOf(cell);
}

/** Runs `change` so that the undo manager never merges it with a neighbouring change. */
function separateUndoStep(shared, change) {
  shared.undoManager?.stopCapturing();
  change();
  shared.undoManager?.stopCapturing();
}

export default plugin;
