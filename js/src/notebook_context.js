// What goes with the panel's next message, from the notebook around it:
// - `@name`s, completed while typing and described at Send by the panel's own kernel
//   (kernel_context.js, mention_complete.js); a name the kernel lacks, or a kernel that
//   does not answer in time, stops the send with a sentence, the text kept;
// - "Attach cell" (the cells selected in the notebook, else the active one: each a chip,
//   with a chip per plot it shows) and the extension's "Ask r3nb" on a failed cell
//   (cell_context.js), shown as removable chips above the input until Send;
// - an image pasted into the input (PNG, JPEG, GIF, WebP), for a model that takes images
//   (the server refuses the message with the reason otherwise; the chips stay).
// Nothing here sends: Send does, with `attachments(content)`.

import { cellAttachment, cellImages, errorAttachments, imageProblem, imageUpload, isCellData } from "./cell_context.js";
import { showPending } from "./composer.js";
import { KernelContext, mentions } from "./kernel_context.js";
import { MentionCompleter } from "./mention_complete.js";
import { askNotebook, DETACHED, NO_EXTENSION } from "./notebook_bridge.js";
import { MAX_IMAGES } from "./protocol.js";

/** @typedef {import("./protocol.js").Attachment} Attachment */
/** @typedef {import("./cell_context.js").Pending} Pending */

/** The event r3nb's JupyterLab extension sends the panel from "Ask r3nb" (labextension/src/context.js). */
export const ASK_EVENT = "r3nb:ask";

/**
 * @typedef {object} NotebookContextHost
 * @property {AbortSignal} signal
 * @property {(text: string) => void} setStatus   the panel's "send" status ("" clears)
 * @property {(ms: number) => Promise<boolean>} sleep   false when the panel went meanwhile
 * @property {() => boolean | null} [takesImages]   the chosen model takes images (null: unknown)
 */

export class NotebookContext {
  /**
   * @param {import("./panel.js").WidgetModel} model
   * @param {HTMLElement} el   the widget's element ("Ask r3nb" arrives there)
   * @param {import("./composer.js").Composer} composer
   * @param {NotebookContextHost} host
   */
  constructor(model, el, composer, host) {
    this.el = el;
    this.composer = composer;
    this.host = host;
    const { signal } = host;
    this.kernel = new KernelContext(model, signal);
    this.completer = new MentionCompleter(el.ownerDocument, composer.input, this.kernel, signal);
    composer.slot.append(this.completer.list);
    composer.keyFilter = (e) => this.completer.onKeyDown(e);
    /** @type {Pending[]} attached to the next message (cells, errors, images) */
    this.pending = [];
    /** the kernel is describing our `@name`s: Send waits for that */
    this.resolving = false;
    /** @type {Map<string, string>} chip name ("cell [3]") → notebook cell id, of the cells attached here */
    this.cellIds = new Map();
    composer.attachCellButton.addEventListener("click", () => void this.attachSelectedCells(), { signal });
    composer.input.addEventListener("paste", (e) => this.onPaste(e), { signal });
    el.addEventListener(ASK_EVENT, (e) => this.onAsk(/** @type {CustomEvent} */ (e)), { signal });
  }

  /**
   * What goes with `content`: the attached cells and errors, then each `@name` described
   * by this panel's kernel. Null when a name cannot be resolved (unknown, or the kernel
   * did not answer in time): nothing is to be sent, and the status line says why.
   * @param {string} content
   * @returns {Promise<Pending[] | null>}
   */
  async attachments(content) {
    const names = mentions(content);
    if (!names.length) return this.pending;
    const listed = names.map((n) => `@${n}`).join(", ");
    this.resolving = true;
    this.el.dataset.resolving = "1";
    this.host.setStatus(`Asking the kernel about ${listed}…`);
    try {
      const answer = await this.kernel.resolve(content);
      if (this.host.signal.aborted) return null;
      if (!answer.ok) {
        this.host.setStatus(answer.busy
          ? `The kernel is busy (${answer.error}): ${listed} could not be attached, so nothing was sent. Send again when its cell has finished.`
          : `${capitalize(answer.error)}: nothing was sent.`);
        return null;
      }
      this.host.setStatus("");
      return [...this.pending, ...(answer.reply.attachments ?? [])];
    } finally {
      this.resolving = false;
      delete this.el.dataset.resolving;
    }
  }

  /** The chips go with the message being sent; returned for `giveBack` if it is refused. */
  take() {
    const pending = this.pending;
    this.setPending([]);
    return pending;
  }

  /** @param {Pending[]} attachments  a refused message's chips, back above the input */
  giveBack(attachments) {
    this.setPending([...attachments, ...this.pending]);
  }

  /** @param {Pending[]} attachments */
  setPending(attachments) {
    this.pending = attachments;
    showPending(this.composer.tray, attachments, (i) => this.setPending(this.pending.filter((_, j) => j !== i)));
  }

  /** Shows "Attach cell" when r3nb's JupyterLab extension answers for this panel. */
  async probeNotebook() {
    for (let tries = 0; tries < 20 && !this.host.signal.aborted; tries++) {
      const reply = await askNotebook(this.composer.el, "probe");
      if (reply.reason !== DETACHED) {
        this.composer.attachCellButton.hidden = !reply.ok;
        this.el.dataset.notebook = reply.ok ? "yes" : "no";
        return;
      }
      if (!(await this.host.sleep(500))) return; // not in the page yet (a detached second view)
    }
  }

  /**
   * "Attach cell": the cells selected in the notebook (else the active one), each a chip
   * on the next message, and a chip for each plot they show.
   */
  async attachSelectedCells() {
    const button = this.composer.attachCellButton;
    let reply = await askNotebook(button, "selected-cells");
    if (!reply.ok && reply.reason === NO_EXTENSION) {
      // An extension from before "selected-cells": the active cell.
      reply = await askNotebook(button, "active-cell");
      if (reply.ok && reply.cell) reply.cells = [reply.cell];
    }
    if (this.host.signal.aborted) return;
    const cells = (reply.cells ?? []).filter(isCellData);
    if (!reply.ok || !cells.length) {
      this.host.setStatus(`Attach cell: ${reply.ok ? "the notebook gave no cell" : reply.reason}.`);
      return;
    }
    /** @type {Pending[]} */
    const added = [];
    const refused = [];
    for (const cell of cells) {
      const attachment = cellAttachment(cell);
      this.remember(attachment.name, cell);
      added.push(attachment);
      for (const image of cellImages(cell)) {
        if (typeof image === "string") refused.push(image);
        else added.push(image);
      }
    }
    this.addPending(added, refused);
    this.composer.input.focus();
  }

  /**
   * Chips for the next message; images beyond MAX_IMAGES are left out, saying so.
   * @param {Pending[]} added
   * @param {string[]} [refused]   why some could not be attached
   */
  addPending(added, refused = []) {
    let images = this.pending.filter((p) => p.kind === "image").length;
    const kept = added.filter((p) => {
      if (p.kind !== "image") return true;
      if (images >= MAX_IMAGES) {
        refused.push(`${p.name}: at most ${MAX_IMAGES} images per message`);
        return false;
      }
      images++;
      return true;
    });
    this.setPending([...this.pending, ...kept]);
    const notes = refused.length ? [`Not attached: ${refused.join("; ")}.`] : [];
    if (kept.some((p) => p.kind === "image") && this.host.takesImages?.() === false) {
      // Said now, not only when Send is refused: the server would refuse the images.
      notes.push("The chosen model takes no images: choose one that does, or remove the image chips (×) before Send.");
    }
    this.host.setStatus(notes.join(" "));
  }

  /**
   * An image pasted into the input becomes a chip (text pastes as usual).
   * @param {ClipboardEvent} event
   */
  onPaste(event) {
    const files = [...(event.clipboardData?.items ?? [])]
      .filter((item) => item.kind === "file" && item.type.startsWith("image/"))
      .map((item) => item.getAsFile())
      .filter((file) => file !== null);
    if (!files.length) return;
    event.preventDefault();
    void Promise.all(files.map((file, i) => readImage(file, files.length > 1 ? `pasted image ${i + 1}` : "pasted image"))).then((images) => {
      if (this.host.signal.aborted) return;
      /** @type {Pending[]} */
      const added = [];
      const refused = [];
      for (const image of images) {
        if (typeof image === "string") refused.push(image);
        else added.push(image);
      }
      this.addPending(added, refused);
    });
  }

  /**
   * @param {string} name
   * @param {import("./cell_context.js").CellData} cell
   */
  remember(name, cell) {
    if (cell.cell_type === "code" && typeof cell.id === "string" && cell.id) this.cellIds.set(name, cell.id);
  }

  /**
   * The code cell a question attached from this panel, for "Replace that cell" on its reply.
   * @param {import("./protocol.js").MessageDict} question
   * @returns {import("./notebook_bridge.js").TargetCell | null}
   */
  cellFor(question) {
    for (const a of question.attachments ?? []) {
      const id = a.kind === "cell" ? this.cellIds.get(a.name) : undefined;
      if (id) return { id, name: a.name };
    }
    return null;
  }

  /**
   * The extension's "Ask r3nb": the failed cell's code and error as chips, the question
   * in the input when it is empty. Nothing is sent until the person presses Send.
   * @param {CustomEvent} event
   */
  onAsk(event) {
    const detail = event.detail;
    if (!detail || typeof detail.respond !== "function") return;
    event.preventDefault();
    if (!isCellData(detail.cell)) return detail.respond({ ok: false, reason: "That is not a notebook cell." });
    const attachments = errorAttachments(detail.cell);
    this.remember(attachments[0].name, detail.cell);
    this.setPending([...this.pending, ...attachments]);
    const input = this.composer.input;
    if (!input.value.trim() && typeof detail.prompt === "string") input.value = detail.prompt;
    input.focus();
    detail.respond({ ok: true });
  }
}

/**
 * A pasted file as an image for the next message, or why it cannot be one.
 * @param {File} file
 * @param {string} name
 * @returns {Promise<import("./cell_context.js").ImageUpload | string>}
 */
async function readImage(file, name) {
  const problem = imageProblem(name, file.type, file.size); // before reading a file too large
  if (problem) return problem;
  const bytes = new Uint8Array(await file.arrayBuffer());
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return imageUpload(name, file.type, btoa(binary));
}

/** @param {string} text */
function capitalize(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
