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
 * Local time of day for today's messages, date and time otherwise.
 * @param {number} epochSeconds
 */
export function formatTime(epochSeconds) {
  const date = new Date(epochSeconds * 1000);
  const today = new Date();
  const sameDay = date.toDateString() === today.toDateString();
  return sameDay
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
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
  let ok = false;
  try {
    ok = doc.execCommand("copy");
  } catch {
    ok = false;
  }
  area.remove();
  return ok;
}
