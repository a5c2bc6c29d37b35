// The DOM of one message: who, which model, its state, its text, usage and attachments.
// A reply's text is rendered by MarkdownView; what a person typed is shown as typed, by
// PlainTextView. A reply that fails to render falls back to plain text here: one message
// never takes the others, or the session's state, with it.

import { versionLabel } from "./branches.js";
import { chipLabel, thumbnail } from "./composer.js";
import { contextOf } from "./context_marks.js";
import { formatTime, formatUsage, h } from "./dom.js";
import { MarkdownView } from "./incremental.js";
import { highlightCode } from "./markdown.js";

/** @typedef {import("./protocol.js").MessageDict} MessageDict */

export class MessageView {
  /**
   * @param {Document} doc
   * @param {import("./incremental.js").MarkdownViewOptions} renderOptions
   * @param {string} role   "user" text is shown as typed, the rest as markdown
   */
  constructor(doc, renderOptions, role) {
    this.doc = doc;
    this.renderOptions = renderOptions;
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
    this.contentEl = contentEl;
    /** @type {MarkdownView | PlainTextView} */
    this.content = role === "user" ? new PlainTextView(contentEl, renderOptions) : new MarkdownView(contentEl, renderOptions);
  }

  /**
   * The message's whole text: final, or a new version of a streaming one.
   * @param {string} text
   * @param {boolean} final
   */
  setText(text, final) {
    this.guard(text, () => {
      if (final) this.content.finish(text);
      else if (text.startsWith(this.content.text)) this.content.append(text.slice(this.content.text.length));
      else this.content.replace(text);
    });
  }

  /**
   * Streaming: more text arrived.
   * @param {string} delta
   */
  appendText(delta) {
    this.guard(this.content.text + delta, () => this.content.append(delta));
  }

  /**
   * Runs a change of the text; when rendering throws, shows `text` as plain text from now on.
   * @param {string} text   the whole text after the change
   * @param {() => void} change
   */
  guard(text, change) {
    try {
      change();
    } catch (err) {
      console.warn("r3nb: a message could not be rendered; showing it as plain text", err);
      this.content.dispose();
      this.content = new PlainTextView(this.contentEl, { ...this.renderOptions, highlight: false });
      this.content.finish(text);
    }
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
    el.dataset.versions = versionLabel(msg); // "2/3" when it has other versions (branches.js)
    const { mark, leftOut } = contextOf(msg); // pinned/excluded, left out (context_marks.js)
    el.dataset.context = mark ?? "";
    el.dataset.leftOut = String(leftOut);
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

    const chips = (msg.attachments || []).map((a) => {
      const url = a.kind === "image" && a.id ? this.renderOptions.attachmentUrl?.(a.id) : null;
      const title = a.kind === "image" ? `${a.mime ?? "image"}, ${Math.ceil((a.size ?? 0) / 1024)} KB, sent to the model` : a.summary || a.kind;
      return h(doc, "span", { class: "r3nb-chip", "data-kind": a.kind, title }, [...(url ? [thumbnail(doc, url)] : []), chipLabel(a)]);
    });
    this.attachments.replaceChildren(...chips);
    this.attachments.hidden = chips.length === 0;

    const footer = [];
    if (msg.status === "error") {
      footer.push(
        h(doc, "div", { class: "r3nb-error", role: "alert" }, [
          h(doc, "span", { class: "r3nb-error-text" }, [`Error: ${msg.error || "the reply failed"}`]),
          h(doc, "button", { type: "button", class: "r3nb-retry", "aria-label": "Retry: ask for this reply again (a new version)" }, ["Retry"]),
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
 * Text shown as typed: whitespace kept, nothing read as markdown. Closed fenced code blocks
 * are highlighted once the text is final (the fences themselves stay visible).
 */
export class PlainTextView {
  /**
   * @param {HTMLElement} container
   * @param {import("./incremental.js").MarkdownViewOptions & { highlight?: boolean }} options
   */
  constructor(container, options) {
    this.container = container;
    this.options = options;
    this.text = "";
    /** No images here; kept for the panel, which asks every message for its choices. */
    this.loadedImages = new Set();
    this.el = container.ownerDocument.createElement("div");
    this.el.className = "r3nb-plain r3nb-typed";
    container.replaceChildren(this.el);
  }

  /** Always shows its final form. */
  get settled() {
    return true;
  }

  /** @param {string} delta */
  append(delta) {
    if (!delta) return;
    this.text += delta;
    this.el.append(delta);
    this.options.onRender();
  }

  /** @param {string} text */
  replace(text) {
    this.text = text;
    this.el.replaceChildren(text);
    this.options.onRender();
  }

  /** @param {string} text */
  finish(text) {
    this.text = text;
    this.el.replaceChildren(...(this.options.highlight === false ? [text] : this.withCode(text)));
    this.options.onRender();
  }

  cancel() {}

  dispose() {}

  /**
   * `text` as nodes: text as it is, and the inside of each closed fenced block highlighted.
   * @param {string} text
   * @returns {(string | Node)[]}
   */
  withCode(text) {
    const nodes = [];
    const fence = /^( {0,3})(`{3,}|~{3,})([^\n`]*)\n([\s\S]*?)\n {0,3}\2[`~]*[ \t]*$/gm;
    let last = 0;
    for (let m = fence.exec(text); m; m = fence.exec(text)) {
      const codeStart = m.index + m[1].length + m[2].length + m[3].length + 1;
      const code = m[4];
      const fragment = this.options.sanitize(highlightCode(code, m[3].trim().split(/\s/)[0] || ""));
      nodes.push(text.slice(last, codeStart), ...Array.from(fragment.childNodes));
      last = codeStart + code.length;
    }
    nodes.push(text.slice(last));
    return nodes.filter((node) => node !== "");
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
