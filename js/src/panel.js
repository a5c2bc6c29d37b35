// The chat panel of one view: its controls, the route to the server, the open conversation.
//
// Per-view state lives here (one ChatPanel per `render` call); what views share — the
// conversation — lives in the model, so two views of one widget (Notebook 7 renders twice)
// follow each other without interfering.

import { BranchActions, EditNote } from "./branches.js";
import { Composer } from "./composer.js";
import { ContextMarks } from "./context_marks.js";
import { h, isolateTyping } from "./dom.js";
import { MessageExtras } from "./extras.js";
import { ScrollFollower } from "./follow.js";
import { ConversationActions } from "./manage.js";
import { ModelPicker } from "./models.js";
import { NotebookContext } from "./notebook_context.js";
import { ConversationPicker } from "./picker.js";
import { createSanitizer } from "./sanitize.js";
import { Session } from "./session.js";
import { ApiError, call, chooseTransport, isAbort } from "./transport.js";
import { UsageLine } from "./usage.js";

/** @typedef {import("./protocol.js").ConversationDict} ConversationDict */
/** @typedef {import("./protocol.js").MessageDict} MessageDict */
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
    /** the server's snapshot cadence (GET health), used when the trait sets none */
    this.serverSnapshotSeconds = 2;
    /** @type {Session | null} */
    this.session = null;
    /** @type {Map<string, string>} status line texts by source, shown together */
    this.statuses = new Map();
    /** @type {Set<ReturnType<typeof setTimeout>>} */
    this.timers = new Set();
    this.creating = false;
    /** @type {Promise<boolean> | null} our last prompt's request, until its stream closes */
    this.inflight = null;
    /** The "stream" status is a "Live stream lost" note that polling may resolve. */
    this.streamLost = false;
    this.lastListRefresh = 0;
    /** @type {[string, (...args: any[]) => void][]} */
    this.modelListeners = [];
    this.picker = new ConversationPicker(doc, {
      transport: () => this.transport,
      signal: this.controller.signal,
      onPick: (cid) => void this.open(cid, true),
    });
    const signal = this.controller.signal;
    this.composer = new Composer(doc, { signal, onSubmit: () => void this.submit(), onStop: () => this.stopReply() });
    // `@name`, attached cells and errors: what goes with the next message (notebook_context.js).
    this.context = new NotebookContext(model, el, this.composer, {
      signal,
      setStatus: (text) => this.setStatus("send", text),
      sleep: (ms) => this.sleep(ms),
    });
    this.models = new ModelPicker(doc, {
      transport: () => this.transport,
      signal,
      current: () => this.picker.current,
      defaultModel: () => this.model.get("default_model") || "",
      onConversation: (c) => this.noteConversation(c),
      setStatus: (text) => this.setStatus("model", text),
    });
    this.actions = new ConversationActions(doc, {
      transport: () => this.transport,
      signal,
      current: () => this.picker.current,
      info: () => this.picker.currentInfo,
      onRenamed: (c) => this.noteConversation(c),
      onDeleted: (cid) => void this.conversationGone(cid, ""),
      onCleared: (c) => {
        this.noteConversation(c);
        this.cancelEdit();
        this.session?.schedulePoll(0); // its branch, now empty, replaces the list
      },
      setStatus: (text) => this.setStatus("manage", text),
      picker: this.picker.select,
    });
    this.usage = new UsageLine(doc, { transport: () => this.transport, signal });
    /** @type {string} the prompt being edited ("" for none), and the draft it displaced */
    this.editing = "";
    this.draftBeforeEdit = "";
    this.editNote = new EditNote(doc, { signal, onCancel: () => this.cancelEdit(true) });
    this.ui = buildDom(doc, this.picker, this.composer, this.models, this.actions, this.usage, this.editNote);
    this.extras = new MessageExtras(this.ui.list, {
      message: (id) => this.session?.entries.get(id)?.msg ?? null,
      messages: () => Array.from(this.session?.entries.values() ?? [], (e) => e.msg),
      loadedImages: (id) => this.session?.entries.get(id)?.view.content.loadedImages ?? new Set(),
      // A new version of the failed or stopped reply, not the question again as a new
      // turn: the history keeps one question and its versions (branches.js shows them).
      onRetry: (id) => void this.regenerate(id),
      cellFor: (id) => {
        const msg = this.session?.entries.get(id)?.msg;
        const question = msg?.parent_id ? this.session?.entries.get(msg.parent_id)?.msg : null;
        return question ? this.context.cellFor(question) : null;
      },
      onStop: (id) => {
        const entry = this.session?.entries.get(id);
        if (entry?.live) this.session?.stop();
        else if (entry) void this.session?.cancel(entry);
      },
      signal,
    });
    this.branches = new BranchActions(this.ui.list, {
      message: (id) => this.session?.entries.get(id)?.msg ?? null,
      onRegenerate: (id) => void this.regenerate(id),
      onEdit: (id) => this.startEdit(id),
      onDelete: (id) => void this.session?.deleteTurn(id),
      onSwitch: (id) => void this.session?.switchTo(id),
      signal,
    });
    this.contextMarks = new ContextMarks(this.ui.list, {
      message: (id) => this.session?.entries.get(id)?.msg ?? null,
      overBudget: (id) => this.session?.overBudget.has(id) ?? false,
      onMark: (id, mark) => void this.session?.mark(id, mark),
      signal,
    });
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
    this.ui.newButton.addEventListener("click", () => void this.startDraft(), { signal });
    this.picker.select.addEventListener("focus", () => void this.refreshConversations(), { signal });
    this.ui.jumpButton.addEventListener("click", () => this.composer.input.focus(), { signal });
    this.composer.input.addEventListener("keydown", (e) => {
      // Escape stops a reply while one is written (the composer's); otherwise it ends editing.
      if (e.key === "Escape" && !e.isComposing && this.editing && !this.composer.busy) {
        e.preventDefault();
        this.cancelEdit(true);
      }
    }, { signal });
    isolateTyping(this.ui.root, signal);

    this.onModel("change:conversation_id", () => void this.open(this.model.get("conversation_id") || "", false));
    this.onModel("change:mode", () => this.updateMode());
    this.onModel("change:default_model", () => this.models.show());
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
        await Promise.all([this.models.load(), this.refreshConversations(true), this.loadCadence()]);
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
    void this.context.probeNotebook();
  }

  /**
   * The server's snapshot cadence, unless the widget's `snapshot_interval` trait sets one:
   * read here, not by the kernel when it builds the panel (a `ChatPanel()` makes no HTTP
   * call and shows even while the server is unreachable).
   */
  async loadCadence() {
    if (seconds(this.model.get("snapshot_interval"), 0) || !this.transport) return;
    const health = await call(this.transport, "GET", "health", undefined, this.controller.signal);
    const value = /** @type {{ snapshot_interval?: unknown }} */ (health).snapshot_interval;
    this.serverSnapshotSeconds = seconds(value, 2);
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
    this.cancelEdit();
    this.ui.list.replaceChildren();
    this.follower.reset();
    this.setStatus("poll", "");
    this.setStatus("send", "");
    this.setStatus("stream", "");
    this.setStatus("model", "");
    this.setStatus("manage", "");
    // The picker shows it even when it is not on a loaded page; its snapshot names it.
    if (cid) this.session = new Session(cid, this.sessionHost(cid));
    this.picker.setCurrent(cid);
    this.models.open(this.picker.currentInfo);
    this.actions.update();
    this.updateBusy();
    void this.usage.refresh();
    await this.session?.start();
  }

  /**
   * @param {string} cid
   * @returns {import("./session.js").SessionHost}
   */
  sessionHost(cid) {
    return {
      transport: /** @type {Transport} */ (this.transport),
      list: this.ui.list,
      sanitize: this.sanitize,
      kernelId: () => this.model.get("kernel_id") || "",
      intervals: () => ({
        snapshotMs: seconds(this.model.get("snapshot_interval"), this.serverSnapshotSeconds) * 1000,
        idleMs: seconds(this.model.get("idle_interval"), 10) * 1000,
      }),
      setStatus: (key, text) => this.setSessionStatus(key, text),
      onBusyChange: () => this.updateBusy(),
      onReplyDone: () => void this.usage.refresh(),
      onRender: () => this.onRender(),
      onPoll: () => this.onPoll(),
      onWatching: (open) => (this.el.dataset.watching = open ? "1" : "0"),
      onConversation: (c) => this.noteConversation(c),
      onGone: () => void this.conversationGone(cid, "That conversation was deleted."),
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
    this.updateBusy(); // replies others write end (or start) here
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

  /** @param {ConversationDict} conversation  a fresh header */
  noteConversation(conversation) {
    this.picker.note(conversation);
    this.models.note(conversation);
  }

  /**
   * @param {string} gone   deleted (here or elsewhere)
   * @param {string} note   what to tell the reader
   */
  async conversationGone(gone, note) {
    this.picker.remove(gone);
    if ((this.session?.cid ?? "") === gone) await this.open(this.picker.first(), true);
    this.setStatus("poll", note);
  }

  /**
   * New: an empty conversation of this panel only, saved by its first Send (so clicking
   * New three times leaves no three empty conversations behind). The caret goes to the input.
   */
  async startDraft() {
    if (!this.transport || this.creating) return;
    this.picker.draft = true;
    await this.open("", true);
    this.picker.render();
    if (!this.controller.signal.aborted) this.composer.input.focus();
  }

  /**
   * Saves a new conversation (the first Send of a draft), and opens it.
   * @param {string} [title]
   * @param {boolean} [focusInput]  the caret goes to the input for typing
   */
  async createConversation(title, focusInput = false) {
    if (!this.transport || this.creating) return null;
    this.creating = true;
    this.updateBusy();
    try {
      const body = title ? { title } : {};
      const reply = await call(this.transport, "POST", "conversations", body, this.controller.signal);
      const conversation = /** @type {ConversationDict} */ (reply.conversation);
      this.noteConversation(conversation);
      void this.open(conversation.id, true);
      return conversation;
    } catch (err) {
      if (!isAbort(err)) this.setStatus("send", this.describeFailure(err));
      return null;
    } finally {
      this.creating = false;
      this.updateBusy();
      if (focusInput && !this.controller.signal.aborted) this.composer.input.focus();
    }
  }

  // --- sending -------------------------------------------------------------------------

  async submit() {
    const input = this.composer.input;
    const content = input.value;
    if (!content.trim() || !this.transport) return;
    // Our last reply has ended but its stream may still be closing: let it.
    if (this.inflight && !this.replyBeingWritten() && !this.creating) await this.inflight;
    if (!this.composerState().sendable || this.context.resolving) return; // the reason is on screen; the text stays
    const attachments = await this.context.attachments(content);
    if (!attachments) return; // why is on the status line; the text stays
    const replaces = this.editing;
    input.value = "";
    const pending = this.context.take();
    const accepted = await this.sendContent(content, replaces, attachments);
    // Never lose a prompt (e.g. a 409: someone else's reply started first), nor its chips.
    if (!accepted) {
      input.value = input.value ? `${content}\n${input.value}` : content;
      this.context.giveBack(pending);
    } else if (replaces && this.editing === replaces) this.endEdit();
  }

  /**
   * @param {string} content
   * @param {string} [replaces]   the prompt this is a new version of (Edit)
   * @param {import("./protocol.js").Attachment[]} [attachments]
   * @returns {Promise<boolean>}
   */
  async sendContent(content, replaces = "", attachments = []) {
    if (!this.session) {
      const title = content.trim().split("\n")[0].slice(0, 60);
      if (!(await this.createConversation(title))) return false;
    }
    const session = this.session;
    if (!session) return false;
    return this.track(session.send(content, this.models.value, replaces, attachments));
  }

  /**
   * A new version of reply `id`, from the model chosen in the picker.
   * @param {string} id
   */
  async regenerate(id) {
    if (!this.session || this.isBusy()) return;
    await this.track(this.session.regenerate(id, this.models.value));
  }

  /**
   * Keeps our request in flight known (Send waits for it) until it ends.
   * @param {Promise<boolean>} request
   */
  async track(request) {
    this.inflight = request;
    this.updateBusy();
    try {
      return await request;
    } finally {
      if (this.inflight === request) this.inflight = null;
      this.updateBusy();
    }
  }

  // --- editing a prompt ----------------------------------------------------------------

  /**
   * Puts prompt `id` back in the input; Send then makes a new version of it.
   * @param {string} id
   */
  startEdit(id) {
    const msg = this.session?.entries.get(id)?.msg;
    if (!msg || msg.role !== "user") return;
    const input = this.composer.input;
    if (!this.editing) this.draftBeforeEdit = input.value;
    this.editing = id;
    input.value = msg.content;
    this.editNote.show(true);
    this.branches.setEditing(id);
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
  }

  /** @param {boolean} [restore]  put back the draft that editing displaced (Escape, Cancel) */
  cancelEdit(restore = false) {
    if (!this.editing) return;
    const draft = this.draftBeforeEdit;
    this.endEdit();
    if (restore) {
      this.composer.input.value = draft;
      this.composer.input.focus();
    }
  }

  endEdit() {
    this.editing = "";
    this.draftBeforeEdit = "";
    this.editNote.show(false);
    this.branches.setEditing("");
  }

  /** Stop, or Escape in the input: stops the reply being written, whoever asked for it. */
  stopReply() {
    const session = this.session;
    if (!session) return;
    session.stop(); // ours, followed live (or about to start)
    for (const entry of session.entries.values()) {
      if (!entry.live && entry.msg.role === "assistant" && entry.msg.status === "streaming") void session.cancel(entry);
    }
  }

  /** @returns {MessageDict | null} the reply being written in the open conversation */
  replyBeingWritten() {
    for (const entry of this.session?.entries.values() ?? []) {
      if (entry.msg.role === "assistant" && entry.msg.status === "streaming") return entry.msg;
    }
    return null;
  }

  /** @returns {{ sendable: boolean, busy: boolean, reason: string }} */
  composerState() {
    const reply = this.replyBeingWritten();
    if (reply) {
      const kernelId = this.model.get("kernel_id") || "";
      const ours = this.session?.sending || (kernelId !== "" && reply.streaming_for === kernelId);
      const reason = ours
        ? "The reply is being written: Send waits until it ends. Stop (or Esc) ends it now."
        : `A reply is being written in this conversation (asked by ${reply.author || "someone"}): Send waits until it ends, or Stop it (Esc).`;
      return { sendable: false, busy: true, reason };
    }
    const waiting = this.creating || (this.session?.sending ?? false) || (this.inflight !== null && this.session === null);
    return { sendable: !waiting, busy: this.session?.sending ?? false, reason: "" };
  }

  isBusy() {
    return !this.composerState().sendable;
  }

  updateBusy() {
    const state = this.composerState();
    const reply = this.replyBeingWritten();
    if (reply) this.models.noteStreaming(reply);
    this.composer.update({ busy: state.busy, reason: state.reason });
    this.branches?.setBusy(!state.sendable);
    this.ui.newButton.disabled = this.creating;
  }

  // --- the list ------------------------------------------------------------------------

  onRender() {
    this.el.dataset.renders = String(Number(this.el.dataset.renders || 0) + 1);
    this.follower.onRender();
  }

  // --- status --------------------------------------------------------------------------

  /**
   * @param {string} key   who reports (init, poll, send, stream, model, manage)
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
 * @param {Composer} composer
 * @param {ModelPicker} models
 * @param {ConversationActions} actions
 * @param {UsageLine} usage
 * @param {EditNote} editNote
 */
function buildDom(doc, picker, composer, models, actions, usage, editNote) {
  const newButton = h(doc, "button", { type: "button", class: "r3nb-new", "aria-label": "New conversation" }, ["New"]);
  const modeNote = h(doc, "span", { class: "r3nb-mode", hidden: true }, ["embedded mode (single kernel)"]);
  const list = h(doc, "div", { class: "r3nb-list", role: "log", "aria-live": "polite", "aria-label": "Messages", tabindex: "0" });
  const status = h(doc, "div", { class: "r3nb-status", role: "status", "aria-live": "polite", hidden: true });
  const jumpButton = h(doc, "button", { type: "button", class: "r3nb-jump", "aria-label": "Jump to the latest message", hidden: true }, ["↓ Latest"]);
  const header = h(doc, "div", { class: "r3nb-header" }, [
    picker.select, actions.renameInput, picker.search, newButton, actions.renameButton, actions.clearButton, actions.deleteButton,
    models.select, modeNote, usage.el,
  ]);
  const body = h(doc, "div", { class: "r3nb-body" }, [list, jumpButton]);
  // No JupyterLab shortcut fires from inside the panel (see isolateTyping for typing).
  const root = h(doc, "div", { class: "r3nb-panel", "data-lm-suppress-shortcuts": "true" }, [
    header, actions.confirmBar, body, status, editNote.el, composer.el,
  ]);
  return { root, newButton, modeNote, list, jumpButton, status };
}
