// The chat panel of one view: its controls, the route to the server, the open conversation.
//
// Per-view state lives here (one ChatPanel per `render` call); what views share — the
// conversation — lives in the model, so two views of one widget (Notebook 7 renders twice)
// follow each other without interfering.
//
// The panel wires its parts and owns which conversation is open; the parts have their own
// modules: the route and cadence (connection.js), Send/Stop (sender.js), editing a prompt
// (prompt_edit.js), the message buttons (message_actions.js), the status line
// (status_line.js) and the elements (panel_dom.js).

import { Composer } from "./composer.js";
import { Connection } from "./connection.js";
import { isolateTyping } from "./dom.js";
import { ScrollFollower } from "./follow.js";
import { ConversationActions } from "./manage.js";
import { messageActions } from "./message_actions.js";
import { ModelPicker } from "./models.js";
import { NotebookContext } from "./notebook_context.js";
import { buildDom } from "./panel_dom.js";
import { ConversationPicker } from "./picker.js";
import { PromptEdit } from "./prompt_edit.js";
import { createSanitizer } from "./sanitize.js";
import { Sender } from "./sender.js";
import { Session } from "./session.js";
import { StatusLine } from "./status_line.js";
import { call, isAbort } from "./transport.js";
import { UsageLine } from "./usage.js";

/** @typedef {import("./protocol.js").ConversationDict} ConversationDict */
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
    /** @type {Set<ReturnType<typeof setTimeout>>} */
    this.timers = new Set();
    this.connection = new Connection({
      model,
      el,
      signal: this.controller.signal,
      sleep: (ms) => this.sleep(ms),
      setStatus: (text) => this.setStatus("init", text),
    });
    /** @type {Session | null} */
    this.session = null;
    this.creating = false;
    this.lastListRefresh = 0;
    /** @type {[string, (...args: any[]) => void][]} */
    this.modelListeners = [];
    this.picker = new ConversationPicker(doc, {
      transport: () => this.transport,
      signal: this.controller.signal,
      onPick: (cid) => void this.open(cid, true),
    });
    const signal = this.controller.signal;
    this.composer = new Composer(doc, { signal, onSubmit: () => void this.sender.submit(), onStop: () => this.sender.stopReply() });
    // `@name`, attached cells and errors: what goes with the next message (notebook_context.js).
    this.context = new NotebookContext(model, el, this.composer, {
      signal,
      setStatus: (text) => this.setStatus("send", text),
      sleep: (ms) => this.sleep(ms),
      takesImages: () => this.models.takesImages(),
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
        this.edit.cancel();
        this.session?.schedulePoll(0); // its branch, now empty, replaces the list
      },
      setStatus: (text) => this.setStatus("manage", text),
      picker: this.picker.select,
    });
    this.usage = new UsageLine(doc, { transport: () => this.transport, signal });
    this.edit = new PromptEdit(doc, {
      input: this.composer.input,
      signal,
      message: (id) => this.session?.entries.get(id)?.msg ?? null,
      onEditing: (id) => this.messageActions.branches.setEditing(id),
    });
    this.ui = buildDom(doc, this.picker, this.composer, this.models, this.actions, this.usage, this.edit.note);
    this.status = new StatusLine(this.ui.status);
    this.sender = new Sender({
      session: () => this.session,
      connected: () => this.transport !== null,
      creating: () => this.creating,
      createConversation: (title) => this.createConversation(title),
      kernelId: () => this.model.get("kernel_id") || "",
      model: () => this.models.value,
      composer: this.composer,
      context: this.context,
      edit: this.edit,
      onBusyChange: () => this.updateBusy(),
    });
    this.messageActions = messageActions(this.ui.list, {
      session: () => this.session,
      cellFor: (question) => this.context.cellFor(question),
      onRegenerate: (id) => void this.sender.regenerate(id),
      onEdit: (id) => this.edit.start(id),
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
      if (e.key === "Escape" && !e.isComposing && this.edit.editing && !this.composer.busy) {
        e.preventDefault();
        this.edit.cancel(true);
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

  /** The route to the server (connection.js): null until start-up chose it. */
  get transport() {
    return this.connection.transport;
  }

  /** Chooses the route, loads models and conversations, opens one. Retries with back-off. */
  async start() {
    const signal = this.controller.signal;
    const load = () => Promise.all([this.models.load(), this.refreshConversations(true), this.connection.loadCadence()]);
    if (!(await this.connection.connect(load))) return;
    const wanted = this.model.get("conversation_id") || "";
    const cid = wanted || this.picker.first();
    await this.open(cid, cid !== wanted);
    if (!signal.aborted) this.el.dataset.r3nbReady = "1";
    void this.context.probeNotebook();
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
    this.edit.cancel();
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
      intervals: () => this.connection.intervals(),
      setStatus: (key, text) => this.status.setSession(key, text),
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

  onPoll() {
    this.el.dataset.polls = String(Number(this.el.dataset.polls || 0) + 1);
    this.updateBusy(); // replies others write end (or start) here
    this.status.settle(() => this.recovering());
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
      if (!isAbort(err)) this.setStatus("send", this.connection.describeFailure(err));
      return null;
    } finally {
      this.creating = false;
      this.updateBusy();
      if (focusInput && !this.controller.signal.aborted) this.composer.input.focus();
    }
  }

  /** Send/Stop, the reason Send waits, and what may be clicked meanwhile (sender.js). */
  updateBusy() {
    const state = this.sender.composerState();
    const reply = this.sender.replyBeingWritten();
    if (reply) this.models.noteStreaming(reply);
    this.composer.update({ busy: state.busy, reason: state.reason });
    this.messageActions?.branches.setBusy(!state.sendable);
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
    this.status.set(key, text);
  }

  updateMode() {
    this.ui.modeNote.hidden = this.model.get("mode") !== "embedded";
  }
}
