// A saved notebook reopened: what an r3nb panel's output says once its kernel is gone.
//
// The panel's view lives in the kernel that showed it. With a fresh kernel (the notebook
// reopened, the kernel restarted) the widget manager finds no model for the saved output
// and shows only "Error displaying widget: model not found". Under that line this adds
// what it is and how to bring it back, in outputs that are r3nb panels: those whose
// `text/plain` is r3nb's hint (r3nb/kernel/panel.py, reopen_hint) or, for notebooks saved
// before that hint, the panel's repr. Nothing else in the notebook changes.

// What jupyterlab-manager's renderer writes into its node (@jupyter-widgets/jupyterlab-manager).
const MODEL_NOT_FOUND = "Error displaying widget: model not found";
const HINT_CLASS = "r3nb-stale-hint";
// How a panel's text/plain begins: r3nb's hint (panel.py's HINT_MARK), then, in notebooks
// saved before it, anywidget's object repr or ipywidgets' repr (older anywidget).
const PANEL_TEXT = /^(r3nb chat panel\b|ChatPanel\(|<r3nb\.kernel\.panel\.ChatPanel object)/;
// A conversation id as the kernel writes it, in the hint or in ipywidgets' repr.
const CONVERSATION = /\(conversation ([\w-]{1,64})\)|conversation_id='([\w-]{1,64})'/;

/**
 * Adds the hint under every r3nb panel output of `tracker`'s notebooks that shows
 * "model not found", now and whenever one does.
 * @param {any} tracker  INotebookTracker
 */
export function staleHints(tracker) {
  const watch = (panel) => {
    // Each renderer writes its message into its own node: the records name that node,
    // so a batch of records (a streaming panel makes many) costs a glance at each.
    const observer = new MutationObserver((records) => {
      for (const record of records) if (isModelNotFound(record.target)) addHint(panel, record.target);
    });
    observer.observe(panel.node, { childList: true, subtree: true });
    panel.disposed.connect(() => observer.disconnect());
    for (const node of panel.node.querySelectorAll(".jupyter-widgets")) if (isModelNotFound(node)) addHint(panel, node);
  };
  tracker.forEach(watch);
  tracker.widgetAdded.connect((_, panel) => watch(panel));
}

/** @param {Node} node */
function isModelNotFound(node) {
  // Only the renderer's own message: one text node, nothing added yet (and no element's
  // textContent read: a streaming panel's nodes can hold a whole reply).
  const only = node.firstChild;
  return node instanceof HTMLElement && node.childNodes.length === 1 && only instanceof Text && only.data === MODEL_NOT_FOUND;
}

/**
 * @param {any} panel  NotebookPanel
 * @param {HTMLElement} node  the widget renderer's node
 */
function addHint(panel, node) {
  const text = panelText(panel.content, node);
  if (text === null) return;
  const hint = document.createElement("div");
  hint.className = HINT_CLASS;
  hint.setAttribute("role", "note");
  hint.style.cssText = "margin-top: 4px; color: var(--jp-ui-font-color1); white-space: normal;";
  const found = text.match(CONVERSATION);
  hint.textContent = hintFor(found?.[1] ?? found?.[2] ?? "");
  node.append(hint);
}

/**
 * The `text/plain` of the output `node` renders when it is an r3nb panel's, else null.
 * @param {any} notebook
 * @param {HTMLElement} node
 */
function panelText(notebook, node) {
  const cell = notebook.widgets.find((c) => c.node.contains(node));
  const area = cell?.outputArea;
  if (!area) return null;
  const index = area.widgets.findIndex((w) => w.node.contains(node));
  if (index < 0 || index >= area.model.length) return null;
  let text = area.model.get(index).data["text/plain"];
  if (Array.isArray(text)) text = text.join("");
  return typeof text === "string" && PANEL_TEXT.test(text) ? text : null;
}

/**
 * The hint's words (kept to reopen_hint's in r3nb/kernel/panel.py).
 * @param {string} conversation
 */
function hintFor(conversation) {
  const where = conversation ? ` (conversation ${conversation})` : "";
  const magic = conversation ? `%r3nb --conversation ${conversation}` : "%r3nb";
  return (
    `r3nb chat panel${where}: it shows only while the kernel that opened it runs. ` +
    `To reopen it, run \`%load_ext r3nb\` and \`${magic}\`; the conversation is saved.`
  );
}
