// Send, regenerate and Stop for one panel, and what the composer may do meanwhile. One
// reply at a time per conversation: while one is written (ours or anyone's), Send waits
// and says why; a prompt the server refuses goes back into the input with its chips.

/** @typedef {import("./protocol.js").MessageDict} MessageDict */
/** @typedef {import("./session.js").Session} Session */

/**
 * What sending needs of its panel.
 * @typedef {object} SenderHost
 * @property {() => Session | null} session     the open conversation's, if any
 * @property {() => boolean} connected          a route to the server was chosen
 * @property {() => boolean} creating           a conversation is being created
 * @property {(title: string) => Promise<unknown>} createConversation  null when it failed
 * @property {() => string} kernelId
 * @property {() => string} model               the model picked ("" for the default)
 * @property {import("./composer.js").Composer} composer
 * @property {import("./notebook_context.js").NotebookContext} context
 * @property {import("./prompt_edit.js").PromptEdit} edit
 * @property {() => void} onBusyChange
 */

export class Sender {
  /** @param {SenderHost} host */
  constructor(host) {
    this.host = host;
    /** @type {Promise<boolean> | null} our last prompt's request, until its stream closes */
    this.inflight = null;
  }

  async submit() {
    const { composer, context, edit } = this.host;
    const input = composer.input;
    const content = input.value;
    if (!content.trim() || !this.host.connected()) return;
    await this.settle();
    if (!this.composerState().sendable || context.resolving) return; // the reason is on screen; the text stays
    const attachments = await context.attachments(content);
    if (!attachments) return; // why is on the status line; the text stays
    const replaces = edit.editing;
    input.value = "";
    const pending = context.take();
    const accepted = await this.sendContent(content, replaces, attachments);
    // Never lose a prompt (e.g. a 409: someone else's reply started first), nor its chips.
    if (!accepted) {
      input.value = input.value ? `${content}\n${input.value}` : content;
      context.giveBack(pending);
    } else if (replaces && edit.editing === replaces) edit.end();
  }

  /**
   * @param {string} content
   * @param {string} [replaces]   the prompt this is a new version of (Edit)
   * @param {import("./protocol.js").Attachment[]} [attachments]
   * @returns {Promise<boolean>}
   */
  async sendContent(content, replaces = "", attachments = []) {
    if (!this.host.session()) {
      const title = content.trim().split("\n")[0].slice(0, 60);
      if (!(await this.host.createConversation(title))) return false;
    }
    const session = this.host.session();
    if (!session) return false;
    return this.track(session.send(content, this.host.model(), replaces, attachments));
  }

  /**
   * A new version of reply `id`, from the model chosen in the picker.
   * @param {string} id
   */
  async regenerate(id) {
    const session = this.host.session();
    if (!session) return;
    await this.settle();
    if (this.host.session() !== session || !this.composerState().sendable) return;
    await this.track(session.regenerate(id, this.host.model()));
  }

  /**
   * Our last reply has ended but the request that streamed it may still be closing:
   * let it. Its `done` shows Send's state and a failed reply's Retry a moment before
   * the request ends, and a click in that moment must not be dropped.
   */
  async settle() {
    if (this.inflight && !this.replyBeingWritten() && !this.host.creating()) await this.inflight;
  }

  /**
   * Keeps our request in flight known (Send waits for it) until it ends.
   * @param {Promise<boolean>} request
   */
  async track(request) {
    this.inflight = request;
    this.host.onBusyChange();
    try {
      return await request;
    } finally {
      if (this.inflight === request) this.inflight = null;
      this.host.onBusyChange();
    }
  }

  /** Stop, or Escape in the input: stops the reply being written, whoever asked for it. */
  stopReply() {
    const session = this.host.session();
    if (!session) return;
    session.stop(); // ours, followed live (or about to start)
    for (const entry of session.entries.values()) {
      if (!entry.live && entry.msg.role === "assistant" && entry.msg.status === "streaming") void session.cancel(entry);
    }
  }

  /** @returns {MessageDict | null} the reply being written in the open conversation */
  replyBeingWritten() {
    for (const entry of this.host.session()?.entries.values() ?? []) {
      if (entry.msg.role === "assistant" && entry.msg.status === "streaming") return entry.msg;
    }
    return null;
  }

  /** @returns {{ sendable: boolean, busy: boolean, reason: string }} */
  composerState() {
    const session = this.host.session();
    const reply = this.replyBeingWritten();
    if (reply) {
      const kernelId = this.host.kernelId();
      const ours = session?.sending || (kernelId !== "" && reply.streaming_for === kernelId);
      const reason = ours
        ? "The reply is being written: Send waits until it ends. Stop (or Esc) ends it now."
        : `A reply is being written in this conversation (asked by ${reply.author || "someone"}): Send waits until it ends, or Stop it (Esc).`;
      return { sendable: false, busy: true, reason };
    }
    const waiting = this.host.creating() || (session?.sending ?? false) || (this.inflight !== null && session === null);
    return { sendable: !waiting, busy: session?.sending ?? false, reason: "" };
  }
}
