// Small DOM and formatting helpers shared by the panel's modules.

/**
 * Creates an element. `attrs` keys starting with "on" are NOT supported on purpose:
 * listeners are attached explicitly (or delegated), never from data.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {Document} doc
 * @param {K} tag
 * @param {Record<string, string | boolean | undefined>} [attrs]  `true` → empty attribute, false/undefined → none
 * @param {(Node | string)[]} [children]
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(doc, tag, attrs = {}, children = []) {
  const el = doc.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    el.setAttribute(name, value === true ? "" : value);
  }
  el.append(...children);
  return el;
}

/**
 * "12 → 340 tokens · $0.0012", or "" when nothing is known.
 * @param {number | null} promptTokens
 * @param {number | null} completionTokens
 * @param {number | null} cost
 */
export function formatUsage(promptTokens, completionTokens, cost) {
  const parts = [];
  if (promptTokens != null || completionTokens != null) {
    parts.push(`${promptTokens ?? "?"} → ${completionTokens ?? "?"} tokens`);
  }
  if (cost != null && Number.isFinite(cost)) parts.push(formatCost(cost));
  return parts.join(" · ");
}

/** @param {number} cost  US dollars */
export function formatCost(cost) {
  if (cost === 0) return "$0";
  if (cost < 0.0001) return "<$0.0001";
  return `$${cost < 1 ? cost.toFixed(4) : cost.toFixed(2)}`;
}

/**
 * @param {any} reply  GET usage: { user, today: { tokens, cost, messages }, month, resets_at }
 * @returns {string}   "alice · today 12,345 tokens · $0.04", "" when the reply is unusable
 */
export function formatUsageLine(reply) {
  const today = reply && typeof reply === "object" ? reply.today : null;
  if (!today || typeof today.tokens !== "number" || !Number.isFinite(today.tokens)) return "";
  const parts = [];
  if (typeof reply.user === "string" && reply.user) parts.push(reply.user);
  parts.push(`today ${formatCount(today.tokens)} tokens`);
  if (typeof today.cost === "number" && Number.isFinite(today.cost) && today.cost > 0) parts.push(formatDollars(today.cost));
  return parts.join(" · ");
}

/** @param {any} reply  the usage line's tooltip */
export function usageTitle(reply) {
  const lines = ["Your usage of this r3nb server (UTC days)"];
  const { today, month } = reply;
  if (today && typeof today.messages === "number") lines.push(`Today: ${formatCount(today.tokens)} tokens in ${formatCount(today.messages)} replies`);
  if (month && typeof month.tokens === "number") {
    const cost = typeof month.cost === "number" && month.cost > 0 ? ` · ${formatDollars(month.cost)}` : "";
    lines.push(`This month: ${formatCount(month.tokens)} tokens${cost}`);
  }
  if (typeof reply.resets_at === "string") lines.push(`The day resets at ${reply.resets_at}`);
  return lines.join("\n");
}

/** @param {number} n */
function formatCount(n) {
  return Math.round(n).toLocaleString("en-US");
}

/** @param {number} cost  US dollars, > 0 */
function formatDollars(cost) {
  return cost < 0.01 ? (cost < 0.0001 ? "<$0.0001" : `$${cost.toFixed(4)}`) : `$${cost.toFixed(2)}`;
}

/**
 * Local time of day for today's messages; the date too for older ones, with the year
 * when it is not this year's.
 * @param {number} epochSeconds
 * @param {Date} [now]
 */
export function formatTime(epochSeconds, now = new Date()) {
  const date = new Date(epochSeconds * 1000);
  const time = /** @type {const} */ ({ hour: "2-digit", minute: "2-digit" });
  if (date.toDateString() === now.toDateString()) return date.toLocaleTimeString([], time);
  /** @type {Intl.DateTimeFormatOptions} */
  const year = date.getFullYear() === now.getFullYear() ? {} : { year: "numeric" };
  return date.toLocaleString([], { ...year, month: "short", day: "numeric", ...time });
}

/**
 * Copies text, with the pre-Clipboard-API fallback for pages that are not a secure context.
 * @param {Document} doc
 * @param {string} text
 * @returns {Promise<boolean>}
 */
export async function copyText(doc, text) {
  const clipboard = doc.defaultView?.navigator.clipboard;
  if (clipboard && doc.defaultView?.isSecureContext) {
    try {
      await clipboard.writeText(text);
      return true;
    } catch {
      // fall through to execCommand (e.g. permission denied in an iframe)
    }
  }
  const area = h(doc, "textarea", { readonly: true, "aria-hidden": "true" });
  area.value = text;
  area.style.position = "fixed";
  area.style.opacity = "0";
  doc.body.append(area);
  area.select();
  let ok;
  try {
    ok = doc.execCommand("copy");
  } catch {
    ok = false;
  }
  area.remove();
  return ok;
}

/**
 * Lets typing in the panel's text fields behave like a plain text box inside JupyterLab.
 *
 * `data-lm-suppress-shortcuts` on the panel keeps Lumino's key bindings from matching, but
 * JupyterLab 4's application keydown handler (on `document`, bubble phase) also arms a
 * one-shot `beforeinput` guard that cancels `insertLineBreak` inside any `.jp-Cell` and
 * `historyUndo`/`historyRedo` inside any `[data-jp-undoer]` — our outputs sit in both, so
 * Shift+Enter and Ctrl+Z did nothing (issue 13). Key events from our fields therefore stop
 * at the panel's root: the page's handlers never see them, the browser edits as usual.
 * @param {HTMLElement} root
 * @param {AbortSignal} signal
 */
export function isolateTyping(root, signal) {
  /** @param {Event} event */
  const stop = (event) => {
    const target = /** @type {Element | null} */ (event.target);
    if (target?.nodeType === 1 && target.matches("textarea, input")) event.stopPropagation();
  };
  for (const name of ["keydown", "keypress", "keyup"]) root.addEventListener(name, stop, { signal });
}
