// The chat panel of one view: its controls, the route to the server, the open conversation.
//
// Per-view state lives here (one ChatPanel per `render` call); what views share — the
// conversation — lives in the model, so two views of one widget (Notebook 7 renders twice)
// follow each other without interfering.

import { copyText, formatUsageLine, h, isolateTyping, usageTitle } from "./dom.js";
import { ScrollFollower } from "./follow.js";
import { ConversationPicker } from "./picker.js";
import { createSanitizer, loadImage } from "./sanitize.js";
import { Session } from "./session.js";
import { ApiError, call, chooseTransport, isAbort } from "./transport.js";

/** @typedef {import("./protocol.js").ConversationDict} ConversationDict */
/** @typedef {import("./protocol.js").ModelsReply} ModelsReply */
/** @typedef {import("./transport.js").Transport} Transport */

/**
 * The anywidget model, as this panel uses it.
 * @typedef {object} WidgetModel
 * @property {(name: string) => any} get
 * @property {(name: string, value: any) => void} set
 * @property {() => void} save_changes
 * @property {(name: string, cb: (...args: any[]) => void) => void} on
 * @property {(name?: string | null, cb?: ((...args: any[]) => void) | null) => void} off
 * @property {(content: any) => void} send
 */

const MAX_INIT_BACKOFF_MS = 60_000;

export class ChatPanel {
  /**
   * @param {WidgetModel} model
   * @param {HTMLElement} el
   */
  constructor(model, el) {
    this.model = model;
    this.el = el;
    const doc = el.ownerDocument;
    this.controller = new AbortController();
    this.sanitize = createSanitizer(/** @type {Window & typeof globalThis} */ (doc.defaultView));
    /** @type {Transport | null} */
    this.transport = null;
    this.directFailure = /** @type {string | null} */ (null);
    /** @type {Session | null} */
    this.session = null;
    /** @type {Map<string, string>} status line texts by source, shown together */
    this.statuses = new Map();
    /** @type {Set<ReturnType<typeof setTimeout>>} */
    this.timers = new Set();
    this.creating = false;
    this.modelChosen = false;
    /** The "stream" status is a "Live stream lost" note that polling may resolve. */
    this.streamLost = false;
    this.lastListRefresh = 0;
    /** A usage request runs / another was asked for meanwhile / the server has no route. */
    this.usageLoading = false;
    this.usageAgain = false;
    this.usageUnsupported = false;
    /** @type {[string, (...args: any[]) => void][]} */
    this.modelListeners = [];
    this.picker = new ConversationPicker(doc, {
      transport: () => this.transport,
      signal: this.controller.signal,
      onPick: (cid) => void this.open(cid, true),
    });
    this.ui = buildDom(doc, this.picker);
    this.follower = new ScrollFollower(this.ui.list, this.ui.jumpButton, this.controller.signal);
    el.classList.add("r3nb-root");
    el.dataset.polls = "0";
    el.dataset.renders = "0";
    el.replaceChildren(this.ui.root);
    this.updateMode();
    this.listen();
  }

  listen() {
    const signal = this.controller.signal;
    this.ui.input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        void this.submit();
      }
    }, { signal });
    this.ui.sendButton.addEventListener("click", () => void this.submit(), { signal });
    this.ui.stopButton.addEventListener("click", () => this.session?.stop(), { signal });
    this.ui.newButton.addEventListener("click", () => void this.createConversation(undefined, true), { signal });
    this.ui.conversationSelect.addEventListener("focus", () => void this.refreshConversations(), { signal });
    this.ui.jumpButton.addEventListener("click", () => this.ui.input.focus(), { signal });
    isolateTyping(this.ui.root, signal);
    this.ui.modelSelect.addEventListener("change", () => { this.modelChosen = true; }, { signal });
    this.ui.list.addEventListener("click", (e) => this.onListClick(e), { signal });

    this.onModel("change:conversation_id", () => void this.open(this.model.get("conversation_id") || "", false));
    this.onModel("change:mode", () => this.updateMode());
    this.onModel("change:default_model", () => {
      if (!this.modelChosen) this.selectModel(this.model.get("default_model"));
    });
  }

  /**
   * @param {string} name
   * @param {(...args: any[]) => void} cb
   */
  onModel(name, cb) {
    this.model.on(name, cb);
    this.modelListeners.push([name, cb]);
  }

  dispose() {
    this.controller.abort();
    for (const [name, cb] of this.modelListeners) this.model.off(name, cb);
    for (const timer of this.timers) clearTimeout(timer);
    this.session?.dispose();
    this.session = null;
    this.transport?.close();
    this.ui.root.remove();
  }

  // --- start-up ----------------------------------------------------------------------

  /** Chooses the route, loads models and conversations, opens one. Retries with back-off. */
  async start() {
    const signal = this.controller.signal;
    for (let attempt = 0; !signal.aborted; attempt++) {
      try {
        if (!this.transport) {
          const chosen = await chooseTransport({
            apiBase: this.model.get("api_base") || "",
            mode: this.model.get("mode") || "server",
            model: this.model,
            signal,
          });
          this.transport = chosen.transport;
          this.directFailure = chosen.directFailure;
          this.el.dataset.transport = chosen.transport.kind;
        }
        await Promise.all([this.loadModels(), this.refreshConversations(true)]);
        break;
      } catch (err) {
        if (signal.aborted || isAbort(err)) return;
        const delay = Math.min(MAX_INIT_BACKOFF_MS, 2000 * 2 ** attempt);
        this.setStatus("init", `${this.describeFailure(err)}; retrying in ${Math.round(delay / 1000)} s`);
        if (!(await this.sleep(delay))) return;
      }
    }
    this.setStatus("init", "");
    const wanted = this.model.get("conversation_id") || "";
    const cid = wanted || this.picker.first();
    await this.open(cid, cid !== wanted);
    if (!signal.aborted) this.el.dataset.r3nbReady = "1";
  }

  /** @param {unknown} err */
  describeFailure(err) {
    const why = err instanceof Error ? err.message : String(err);
    if (err instanceof ApiError) return why;
    if (this.transport?.kind === "relay" && this.directFailure && this.directFailure !== "no direct route") {
      return `Cannot reach the r3nb server extension: ${this.directFailure}; the kernel relay failed too (${why})`;
    }
    if (this.transport?.kind === "relay") return `Cannot reach r3nb through the kernel (${why})`;
    return `Cannot reach the r3nb server extension: ${why}`;
  }

  /**
   * @param {number} ms
   * @returns {Promise<boolean>} false when the panel was disposed meanwhile
   */
  sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        resolve(!this.controller.signal.aborted);
      }, ms);
      this.timers.add(timer);
      this.controller.signal.addEventListener("abort", () => resolve(false), { once: true });
    });
  }

  async loadModels() {
    const transport = /** @type {Transport} */ (this.transport);
    const reply = /** @type {ModelsReply} */ (await call(transport, "GET", "models", undefined, this.controller.signal));
    const doc = this.el.ownerDocument;
    const options = (reply.models || []).map((m) =>
      h(doc, "option", { value: m.name, title: m.description || m.model || m.name }, [m.name]),
    );
    if (options.length === 0) options.push(h(doc, "option", { value: "" }, ["server default"]));
    this.ui.modelSelect.replaceChildren(...options);
    this.selectModel(this.model.get("default_model") || reply.default || "");
  }

  /** @param {string} name */
  selectModel(name) {
    if (name && Array.from(this.ui.modelSelect.options).some((o) => o.value === name)) this.ui.modelSelect.value = name;
  }

  /**
   * Reloads the first page of the conversation list (throttled unless forced).
   * @param {boolean} [force]
   */
  async refreshConversations(force = false) {
    if (!this.transport || (!force && Date.now() - this.lastListRefresh < 3000)) return;
    this.lastListRefresh = Date.now();
    try {
      await this.picker.reload();
    } catch (err) {
      if (force) throw err; // start-up decides; later refreshes are best effort
    }
  }

  // --- conversations -------------------------------------------------------------------

  /**
   * Shows conversation `cid` ("" for none). `save` writes it to the model (shared by views).
   * @param {string} cid
   * @param {boolean} save
   */
  async open(cid, save) {
    if (!this.transport || this.controller.signal.aborted) return;
    if (save && this.model.get("conversation_id") !== cid) {
      this.model.set("conversation_id", cid);
      this.model.save_changes();
    }
    if ((this.session?.cid ?? "") === cid) return this.session?.start(); // e.g. our own model.set echoing back
    this.session?.dispose();
    this.session = null;
    this.ui.list.replaceChildren();
    this.follower.reset();
    this.setStatus("poll", "");
    this.setStatus("send", "");
    this.setStatus("stream", "");
    // The picker shows it even when it is not on a loaded page; its snapshot names it.
    if (cid) this.session = new Session(cid, this.sessionHost());
    this.picker.setCurrent(cid);
    this.updateBusy();
    void this.refreshUsage();
    await this.session?.start();
  }

  /** @returns {import("./session.js").SessionHost} */
  sessionHost() {
    return {
      transport: /** @type {Transport} */ (this.transport),
      list: this.ui.list,
      sanitize: this.sanitize,
      kernelId: () => this.model.get("kernel_id") || "",
      intervals: () => ({
        snapshotMs: seconds(this.model.get("snapshot_interval"), 2) * 1000,
        idleMs: seconds(this.model.get("idle_interval"), 10) * 1000,
      }),
      setStatus: (key, text) => this.setSessionStatus(key, text),
      onBusyChange: () => this.updateBusy(),
      onReplyDone: () => void this.refreshUsage(),
      onRender: () => this.onRender(),
      onPoll: () => this.onPoll(),
      onConversation: (c) => this.picker.note(c),
      onGone: () => void this.conversationGone(),
      isShown: () => this.el.isConnected,
    };
  }

  /**
   * A session's status line. A "Live stream lost" note stays only while a reply it was
   * about is still being recovered by polling (issue 13): see `onPoll`.
   * @param {string} key
   * @param {string} text
   */
  setSessionStatus(key, text) {
    if (key === "stream") this.streamLost = text.startsWith("Live stream lost");
    this.setStatus(key, text);
  }

  onPoll() {
    this.el.dataset.polls = String(Number(this.el.dataset.polls || 0) + 1);
    if (this.streamLost && !this.recovering()) {
      this.streamLost = false;
      this.setStatus("stream", "");
    }
  }

  /** Whether a reply whose live stream was lost is still being written. */
  recovering() {
    for (const entry of this.session?.entries.values() ?? []) {
      if (entry.liveFailed && entry.msg.status === "streaming") return true;
    }
    return false;
  }

  async conversationGone() {
    const gone = this.session?.cid ?? "";
    this.picker.remove(gone);
    await this.open(this.picker.first(), true);
    this.setStatus("poll", "That conversation was deleted.");
  }

  /**
   * @param {string} [title]
   * @param {boolean} [focusInput]  the New button: the caret goes to the input for typing
   */
  async createConversation(title, focusInput = false) {
    if (!this.transport || this.creating) return null;
    this.creating = true;
    this.updateBusy();
    try {
      const body = title ? { title } : {};
      const reply = await call(this.transport, "POST", "conversations", body, this.controller.signal);
      const conversation = /** @type {ConversationDict} */ (reply.conversation);
      this.picker.note(conversation);
      void this.open(conversation.id, true);
      return conversation;
    } catch (err) {
      if (!isAbort(err)) this.setStatus("send", this.describeFailure(err));
      return null;
    } finally {
      this.creating = false;
      this.updateBusy();
      if (focusInput && !this.controller.signal.aborted) this.ui.input.focus();
    }
  }

  // --- sending -------------------------------------------------------------------------

  async submit() {
    const content = this.ui.input.value;
    if (!content.trim() || this.isBusy() || !this.transport) return;
    this.ui.input.value = "";
    const accepted = await this.sendContent(content);
    if (!accepted && this.ui.input.value === "") this.ui.input.value = content; // never lose a prompt
  }

  /**
   * @param {string} content
   * @returns {Promise<boolean>}
   */
  async sendContent(content) {
    if (!this.session) {
      const title = content.trim().split("\n")[0].slice(0, 60);
      if (!(await this.createConversation(title))) return false;
    }
    const session = this.session;
    if (!session) return false;
    return session.send(content, this.ui.modelSelect.value);
  }

  isBusy() {
    return this.creating || (this.session?.busy() ?? false);
  }

  updateBusy() {
    const busy = this.isBusy();
    const hadFocus = this.ui.root.ownerDocument.activeElement === this.ui.input || this.ui.root.ownerDocument.activeElement === this.ui.stopButton;
    this.ui.sendButton.hidden = busy;
    this.ui.stopButton.hidden = !busy;
    this.ui.input.disabled = busy;
    this.ui.newButton.disabled = busy;
    if (hadFocus) (busy ? this.ui.stopButton : this.ui.input).focus();
  }

  // --- the list ------------------------------------------------------------------------

  /** @param {MouseEvent} event */
  onListClick(event) {
    const target = /** @type {Element | null} */ (event.target instanceof Element ? event.target : null);
    const button = /** @type {HTMLButtonElement | null} */ (target?.closest("button") ?? null);
    if (!button || !this.ui.list.contains(button)) return;
    const messageEl = /** @type {HTMLElement | null} */ (button.closest("[data-r3nb-role=message]"));
    const id = messageEl?.dataset.messageId ?? "";
    if (button.classList.contains("r3nb-copy")) void this.copyCode(button);
    else if (button.classList.contains("r3nb-img-load")) {
      const entry = this.session?.entries.get(id);
      loadImage(button, entry ? entry.view.content.loadedImages : new Set());
    } else if (button.classList.contains("r3nb-retry")) {
      const content = this.session?.retryContent(id);
      if (content && !this.isBusy()) void this.sendContent(content);
    }
  }

  /** @param {HTMLButtonElement} button */
  async copyCode(button) {
    const code = button.parentElement?.querySelector("pre")?.textContent ?? "";
    const ok = await copyText(button.ownerDocument, code);
    button.textContent = ok ? "Copied" : "Copy failed";
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      button.textContent = "Copy";
    }, 1500);
    this.timers.add(timer);
  }

  onRender() {
    this.el.dataset.renders = String(Number(this.el.dataset.renders || 0) + 1);
    this.follower.onRender();
  }

  // --- usage -------------------------------------------------------------------------

  /**
   * Reloads the caller's usage line: on load, on a conversation switch and after each of
   * this panel's replies (never on a timer). A server without the route (404) or a failed
   * request hides the line.
   */
  async refreshUsage() {
    if (!this.transport || this.usageUnsupported || this.controller.signal.aborted) return;
    if (this.usageLoading) {
      this.usageAgain = true;
      return;
    }
    this.usageLoading = true;
    try {
      const reply = await call(this.transport, "GET", "usage", undefined, this.controller.signal);
      const text = formatUsageLine(reply);
      this.ui.usage.textContent = text;
      this.ui.usage.title = usageTitle(reply);
      this.ui.usage.hidden = text === "";
    } catch (err) {
      if (isAbort(err)) return;
      if (err instanceof ApiError && err.status === 404) this.usageUnsupported = true;
      this.ui.usage.hidden = true;
    } finally {
      this.usageLoading = false;
    }
    if (this.usageAgain) {
      this.usageAgain = false;
      await this.refreshUsage();
    }
  }

  // --- status --------------------------------------------------------------------------

  /**
   * @param {string} key   who reports (init, poll, send, stream)
   * @param {string} text  "" clears
   */
  setStatus(key, text) {
    if (text) this.statuses.set(key, text);
    else this.statuses.delete(key);
    const all = Array.from(this.statuses.values());
    this.ui.status.textContent = all.join(" · ");
    this.ui.status.hidden = all.length === 0;
  }

  updateMode() {
    this.ui.modeNote.hidden = this.model.get("mode") !== "embedded";
  }
}

/**
 * A positive number of seconds from a trait, or the default.
 * @param {unknown} value
 * @param {number} fallback
 */
function seconds(value, fallback) {
  return typeof value === "number" && Number.isFinite(value) && value > 0 ? Math.max(value, 0.2) : fallback;
}

/**
 * The panel's elements. Classes and data attributes are stable hooks for tests.
 * @param {Document} doc
 * @param {ConversationPicker} picker
 */
function buildDom(doc, picker) {
  const conversationSelect = picker.select;
  const newButton = h(doc, "button", { type: "button", class: "r3nb-new", "aria-label": "New conversation" }, ["New"]);
  const modelSelect = h(doc, "select", { class: "r3nb-models", "aria-label": "Model" });
  const modeNote = h(doc, "span", { class: "r3nb-mode", hidden: true }, ["embedded mode (single kernel)"]);
  const list = h(doc, "div", { class: "r3nb-list", role: "log", "aria-live": "polite", "aria-label": "Messages", tabindex: "0" });
  const status = h(doc, "div", { class: "r3nb-status", role: "status", "aria-live": "polite", hidden: true });
  const input = h(doc, "textarea", {
    class: "r3nb-input",
    rows: "2",
    "aria-label": "Message",
    placeholder: "Ask anything (Enter sends, Shift+Enter for a new line)",
  });
  const sendButton = h(doc, "button", { type: "button", class: "r3nb-send", "aria-label": "Send message" }, ["Send"]);
  const stopButton = h(doc, "button", { type: "button", class: "r3nb-stop", "aria-label": "Stop the reply", hidden: true }, ["Stop"]);
  // `.r3nb-usage` like a message's usage footer; `.r3nb-panel-usage` tells them apart.
  const usage = h(doc, "span", { class: "r3nb-usage r3nb-panel-usage", hidden: true });
  const jumpButton = h(doc, "button", { type: "button", class: "r3nb-jump", "aria-label": "Jump to the latest message", hidden: true }, ["↓ Latest"]);
  const header = h(doc, "div", { class: "r3nb-header" }, [conversationSelect, picker.search, newButton, modelSelect, modeNote, usage]);
  const body = h(doc, "div", { class: "r3nb-body" }, [list, jumpButton]);
  const composer = h(doc, "div", { class: "r3nb-composer" }, [input, sendButton, stopButton]);
  // No JupyterLab shortcut fires from inside the panel (see isolateTyping for typing).
  const root = h(doc, "div", { class: "r3nb-panel", "data-lm-suppress-shortcuts": "true" }, [header, body, status, composer]);
  return { root, conversationSelect, newButton, modelSelect, modeNote, usage, list, jumpButton, status, input, sendButton, stopButton };
}
