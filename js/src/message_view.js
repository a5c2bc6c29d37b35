// The DOM of one message: who, which model, its state, its text, usage and attachments.
// Text rendering is delegated to MarkdownView; this module only draws the frame around it.

import { formatTime, formatUsage, h } from "./dom.js";
import { MarkdownView } from "./incremental.js";

/** @typedef {import("./protocol.js").MessageDict} MessageDict */

export class MessageView {
  /**
   * @param {Document} doc
   * @param {import("./incremental.js").MarkdownViewOptions} renderOptions
   */
  constructor(doc, renderOptions) {
    this.doc = doc;
    this.meta = h(doc, "div", { class: "r3nb-meta" });
    this.attachments = h(doc, "div", { class: "r3nb-attachments" });
    const contentEl = h(doc, "div", { class: "r3nb-content" });
    this.footer = h(doc, "div", { class: "r3nb-footer" });
    this.el = h(doc, "article", { class: "r3nb-message", "data-r3nb-role": "message" }, [
      this.meta,
      this.attachments,
      contentEl,
      this.footer,
    ]);
    this.content = new MarkdownView(contentEl, renderOptions);
  }

  /**
   * Redraws everything but the text (called on start/done/snapshot, not per delta).
   * @param {MessageDict} msg
   * @param {string} kernelId  this panel's kernel: its streams are followed live
   */
  update(msg, kernelId) {
    const { doc, el } = this;
    el.dataset.messageId = msg.id;
    el.dataset.status = msg.status;
    el.dataset.author = msg.author ?? "";
    el.dataset.role = msg.role;
    el.className = `r3nb-message r3nb-message-${msg.role}`;
    el.setAttribute("aria-busy", String(msg.status === "streaming"));

    const who = msg.role === "assistant" ? "Assistant" : msg.role === "system" ? "System" : msg.author || "You";
    const parts = [h(doc, "span", { class: "r3nb-author" }, [who])];
    if (msg.role === "assistant" && msg.model) parts.push(h(doc, "span", { class: "r3nb-model" }, [msg.model]));
    if (msg.role === "assistant" && msg.author) parts.push(h(doc, "span", { class: "r3nb-asker", title: "asked by" }, [`for ${msg.author}`]));
    const badge = statusBadge(doc, msg, kernelId);
    if (badge) parts.push(badge);
    if (msg.created_at) {
      const iso = new Date(msg.created_at * 1000).toISOString();
      parts.push(h(doc, "time", { class: "r3nb-time", datetime: iso, title: iso }, [formatTime(msg.created_at)]));
    }
    this.meta.replaceChildren(...parts);

    const chips = (msg.attachments || []).map((a) =>
      h(doc, "span", { class: "r3nb-chip", title: a.summary || a.kind }, [`@${a.name}`]),
    );
    this.attachments.replaceChildren(...chips);
    this.attachments.hidden = chips.length === 0;

    const footer = [];
    if (msg.status === "error") {
      footer.push(
        h(doc, "div", { class: "r3nb-error", role: "alert" }, [
          h(doc, "span", { class: "r3nb-error-text" }, [`Error: ${msg.error || "the reply failed"}`]),
          h(doc, "button", { type: "button", class: "r3nb-retry", "aria-label": "Retry: send the question again" }, ["Retry"]),
        ]),
      );
    }
    const usage = formatUsage(msg.prompt_tokens, msg.completion_tokens, msg.cost);
    if (usage) footer.push(h(doc, "span", { class: "r3nb-usage" }, [usage]));
    this.footer.replaceChildren(...footer);
    this.footer.hidden = footer.length === 0;
  }

  dispose() {
    this.content.dispose();
    this.el.remove();
  }
}

/**
 * @param {Document} doc
 * @param {MessageDict} msg
 * @param {string} kernelId
 * @returns {HTMLElement | null}
 */
function statusBadge(doc, msg, kernelId) {
  if (msg.status === "streaming") {
    if (kernelId && msg.streaming_for === kernelId) {
      return h(doc, "span", { class: "r3nb-badge r3nb-streaming", role: "status" }, [
        h(doc, "span", { class: "r3nb-dots", "aria-hidden": "true" }),
        "streaming",
      ]);
    }
    return h(doc, "span", { class: "r3nb-badge r3nb-responding", role: "status" }, ["AI is responding…"]);
  }
  if (msg.status === "cancelled") return h(doc, "span", { class: "r3nb-badge r3nb-cancelled" }, ["cancelled"]);
  if (msg.status === "error") return h(doc, "span", { class: "r3nb-badge r3nb-failed" }, ["error"]);
  return null;
}
