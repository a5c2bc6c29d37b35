// What the buttons on the messages do: each message's extras (copy, retry, stop, …;
// extras.js), its versions, edit and delete (branches.js) and its context marks
// (context_marks.js), all wired to whatever session is open when they are clicked.

import { BranchActions } from "./branches.js";
import { ContextMarks } from "./context_marks.js";
import { MessageExtras } from "./extras.js";

/** @typedef {import("./protocol.js").MessageDict} MessageDict */

/**
 * What the message actions need of their panel.
 * @typedef {object} MessageActionsHost
 * @property {() => import("./session.js").Session | null} session   the open one, if any
 * @property {(question: MessageDict) => import("./notebook_bridge.js").TargetCell | null} cellFor
 *   the cell a prompt was asked about (notebook_context.js)
 * @property {(id: string) => void} onRegenerate   a new version of reply `id`
 * @property {(id: string) => void} onEdit         put prompt `id` back in the input
 * @property {AbortSignal} signal
 */

/**
 * @param {HTMLElement} list   the message list element
 * @param {MessageActionsHost} host
 */
export function messageActions(list, host) {
  const { signal } = host;
  /** @param {string} id */
  const entry = (id) => host.session()?.entries.get(id);
  /** @param {string} id */
  const message = (id) => entry(id)?.msg ?? null;
  const extras = new MessageExtras(list, {
    message,
    messages: () => Array.from(host.session()?.entries.values() ?? [], (e) => e.msg),
    loadedImages: (id) => entry(id)?.view.content.loadedImages ?? new Set(),
    // A new version of the failed or stopped reply, not the question again as a new
    // turn: the history keeps one question and its versions (branches.js shows them).
    onRetry: (id) => host.onRegenerate(id),
    cellFor: (id) => {
      const msg = entry(id)?.msg;
      const question = msg?.parent_id ? entry(msg.parent_id)?.msg : null;
      return question ? host.cellFor(question) : null;
    },
    onStop: (id) => {
      const found = entry(id);
      if (found?.live) host.session()?.stop();
      else if (found) void host.session()?.cancel(found);
    },
    signal,
  });
  const branches = new BranchActions(list, {
    message,
    onRegenerate: (id) => host.onRegenerate(id),
    onEdit: (id) => host.onEdit(id),
    onDelete: (id) => void host.session()?.deleteTurn(id),
    onSwitch: (id) => void host.session()?.switchTo(id),
    signal,
  });
  const contextMarks = new ContextMarks(list, {
    message,
    overBudget: (id) => host.session()?.overBudget.has(id) ?? false,
    onMark: (id, mark) => void host.session()?.mark(id, mark),
    signal,
  });
  return { extras, branches, contextMarks };
}
