// The model picker: which model the open conversation's next replies use.
//
// The choice belongs to the conversation, on the server (`model` in its header; `PATCH
// conversations/{cid} {model}` stores it), so it survives a reload and every panel on the
// conversation shows the same one. Without a stored choice the picker shows the default:
// the widget's `default_model`, else the server's.
//
// The list itself can change while the server runs (an admin edits its models file). It
// is fetched again when it may be stale, never on a timer: when the person reaches for the
// picker, when another conversation opens (both at most once every REFRESH_MS), and when a
// conversation or a reply names a model the list lacks (once per such name).

import { h } from "./dom.js";
import { call, isAbort } from "./transport.js";

/** @typedef {import("./protocol.js").ConversationDict} ConversationDict */
/** @typedef {import("./protocol.js").MessageDict} MessageDict */
/** @typedef {import("./protocol.js").ModelsReply} ModelsReply */
/** @typedef {import("./transport.js").Transport} Transport */

/** Fewest milliseconds between two fetches of `GET models` prompted by use. */
export const REFRESH_MS = 3000;

/**
 * @typedef {object} ModelPickerHost
 * @property {() => Transport | null} transport
 * @property {AbortSignal} signal
 * @property {() => string} current            the open conversation ("" for none)
 * @property {() => string} defaultModel       the widget's default_model trait
 * @property {(conversation: ConversationDict) => void} onConversation   a PATCH answered
 * @property {(text: string) => void} setStatus   "" clears
 */

export class ModelPicker {
  /**
   * @param {Document} doc
   * @param {ModelPickerHost} host
   */
  constructor(doc, host) {
    this.host = host;
    this.select = h(doc, "select", { class: "r3nb-models", "aria-label": "Model for this conversation" });
    this.serverDefault = "";
    /** The open conversation's stored model (null: none stored, the default applies). */
    this.stored = /** @type {string | null} */ (null);
    /** A PATCH is on its way: headers that predate it must not undo the choice. */
    this.saving = 0;
    /** Streaming replies whose model was shown once (a resumed stream shows its model). */
    this.shownFor = new Set();
    /** When the list was last asked for (ms), whether a request runs, and what it showed. */
    this.loadedAt = 0;
    this.loading = false;
    this.listKey = "";
    /** Unknown model names a refresh was made for (each only once). */
    this.askedFor = new Set();
    /** @type {Map<string, import("./protocol.js").ModelInfo>} the list as last loaded, by name */
    this.infos = new Map();
    this.select.addEventListener("change", () => void this.save(), { signal: host.signal });
    for (const type of ["focus", "pointerdown"]) {
      this.select.addEventListener(type, () => this.refresh(), { signal: host.signal });
    }
  }

  /** Loads the list. Errors go to the caller (start-up retries). */
  async load() {
    const transport = /** @type {Transport} */ (this.host.transport());
    this.loadedAt = Date.now();
    this.apply(/** @type {ModelsReply} */ (await call(transport, "GET", "models", undefined, this.host.signal)));
  }

  /**
   * Loads the list again if it was not just loaded (`force`: even then). Best effort: a
   * failure keeps the list shown, and the next use tries again.
   * @param {boolean} [force]
   */
  refresh(force = false) {
    if (!this.host.transport() || this.loading || this.host.signal.aborted) return;
    if (!force && Date.now() - this.loadedAt < REFRESH_MS) return;
    this.loading = true;
    this.load()
      .catch(() => {})
      .finally(() => {
        this.loading = false;
      });
  }

  /**
   * Shows `reply`'s models; a list that did not change is left alone (an open dropdown
   * and the person's choice are not disturbed).
   * @param {ModelsReply} reply
   */
  apply(reply) {
    const models = reply.models || [];
    this.infos = new Map(models.map((m) => [m.name, m]));
    const key = JSON.stringify([reply.default || "", models.map((m) => [m.name, m.model, m.description])]);
    if (key === this.listKey) return;
    this.listKey = key;
    const chosen = this.select.value;
    // The stored model was missing, so `chosen` is a stand-in: show the stored one if it came.
    const storedWasMissing = this.stored !== null && !this.has(this.stored);
    const doc = this.select.ownerDocument;
    const options = models.map((m) =>
      h(doc, "option", { value: m.name, title: m.description || m.model || m.name }, [m.name]),
    );
    if (options.length === 0) options.push(h(doc, "option", { value: "" }, ["server default"]));
    this.select.replaceChildren(...options);
    this.serverDefault = reply.default || "";
    if (chosen && this.has(chosen) && !(storedWasMissing && this.stored !== null && this.has(this.stored))) {
      this.select.value = chosen;
    } else {
      this.show();
    }
  }

  /**
   * A model named by the server that the list lacks: the models changed since it loaded.
   * @param {string} name
   */
  refreshFor(name) {
    if (this.has(name) || this.askedFor.has(name)) return;
    this.askedFor.add(name);
    this.refresh(true);
  }

  /** What the next prompt asks for ("" for the server's default). */
  get value() {
    return this.select.value;
  }

  /** Whether the model of the next prompt takes images (null: not known). */
  takesImages() {
    const info = this.infos.get(this.select.value || this.serverDefault);
    return typeof info?.images === "boolean" ? info.images : null;
  }

  /**
   * A conversation was opened; `info` is what the list knows of it (its snapshot follows).
   * @param {ConversationDict | null} info
   */
  open(info) {
    this.stored = info?.model ?? null;
    this.shownFor.clear();
    this.show();
    if (this.stored) this.refreshFor(this.stored);
    this.refresh();
  }

  /** @param {ConversationDict} conversation  a fresh header (snapshot, list, PATCH) */
  note(conversation) {
    if (conversation.id !== this.host.current() || this.saving > 0) return;
    const model = conversation.model ?? null;
    if (model === this.stored) return;
    this.stored = model;
    this.show();
    if (model) this.refreshFor(model);
  }

  /** @param {MessageDict} msg  a reply being written: the picker shows its model once */
  noteStreaming(msg) {
    if (this.shownFor.has(msg.id) || !msg.model) return;
    this.shownFor.add(msg.id);
    if (this.has(msg.model)) this.select.value = msg.model;
    else this.refreshFor(msg.model);
  }

  /** Shows the stored model, else the default. */
  show() {
    for (const name of [this.stored, this.host.defaultModel(), this.serverDefault]) {
      if (name && this.has(name)) {
        this.select.value = name;
        return;
      }
    }
  }

  /** @param {string} name */
  has(name) {
    return Array.from(this.select.options).some((o) => o.value === name);
  }

  /** A person chose a model: store it with the open conversation (or with its first prompt). */
  async save() {
    const cid = this.host.current();
    const transport = this.host.transport();
    const model = this.select.value;
    if (!cid || !transport || !model) return; // no conversation yet: the first prompt carries it
    this.saving += 1;
    try {
      const reply = await call(transport, "PATCH", `conversations/${encodeURIComponent(cid)}`, { model }, this.host.signal);
      this.saving -= 1;
      if (cid !== this.host.current()) return;
      this.stored = model;
      this.host.setStatus("");
      this.host.onConversation(/** @type {ConversationDict} */ (reply.conversation));
    } catch (err) {
      this.saving -= 1;
      if (isAbort(err) || cid !== this.host.current()) return;
      this.host.setStatus(`The model could not be changed: ${err instanceof Error ? err.message : String(err)}`);
      this.show();
    }
  }
}
