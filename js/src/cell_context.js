// Cells and errors → chat, the widget's half: a notebook cell (as r3nb's JupyterLab
// extension reads it, labextension/src/context.js) becomes attachments of the next
// message, bounded like `@name` (r3nb/kernel/context.py: 2,000 characters for a table,
// 1,000 for a repr), with ANSI colour codes stripped from tracebacks: the model gets the
// text the person saw in the notebook, and the chip shows it before anything is sent.

import { IMAGE_MIMES, MAX_IMAGE_BYTES } from "./protocol.js";

/** @typedef {import("./protocol.js").Attachment} Attachment */
/** @typedef {import("./protocol.js").ImageUpload} ImageUpload */
/** What waits above the input for Send: text context, or an image with its bytes. */
/** @typedef {Attachment | ImageUpload} Pending */

/**
 * One output as the extension sends it (nbformat's fields, text only).
 * @typedef {object} CellOutput
 * @property {string} output_type
 * @property {string | string[]} [text]
 * @property {string} [ename]
 * @property {string} [evalue]
 * @property {string[]} [traceback]
 * @property {Record<string, string | string[]>} [data]
 */

/**
 * @typedef {object} CellData
 * @property {number} index
 * @property {string} [id]   the notebook's id of the cell ("Replace that cell")
 * @property {string} cell_type
 * @property {string} source
 * @property {number | null} execution_count
 * @property {CellOutput[]} outputs
 */

/** The bounds of `@name`'s descriptions, by part. */
export const MAX_CODE = 2000;
export const MAX_OUTPUT = 1000;
export const MAX_TRACEBACK = 2000;

// CSI and OSC sequences (colours, cursor moves, hyperlinks), as IPython's tracebacks use.
// eslint-disable-next-line no-control-regex
const ANSI = /\u001b\[[0-?]*[ -/]*[@-~]|\u001b\][^\u0007\u001b]*(?:\u0007|\u001b\\)|\u001b[@-Z\\-_]/g;

/** @param {string} text */
export function stripAnsi(text) {
  return text.replace(ANSI, "");
}

/**
 * `text` cut to `limit` characters, keeping its start (or its end, for a traceback: the
 * failing line is last), saying how much was left out.
 * @param {string} text
 * @param {number} limit
 * @param {"start" | "end"} [keep]
 */
export function bounded(text, limit, keep = "start") {
  if (text.length <= limit) return text;
  const cut = `… (${text.length - limit} characters left out)`;
  return keep === "start" ? text.slice(0, limit) + `\n${cut}` : `${cut}\n` + text.slice(-limit);
}

/**
 * A cell's chip name: "cell [3]" after a run, "cell #5" (its position) before one.
 * @param {CellData} cell
 */
export function cellName(cell) {
  return cell.execution_count != null ? `cell [${cell.execution_count}]` : `cell #${cell.index + 1}`;
}

/**
 * @param {string | string[] | undefined} value  nbformat's multi-line string
 */
function joined(value) {
  return Array.isArray(value) ? value.join("") : typeof value === "string" ? value : "";
}

/**
 * The error of a cell's outputs, as shown: "NameError: name 'x' is not defined" and the
 * traceback without colour codes, bounded (its end kept). Null when it has none.
 * @param {CellData} cell
 * @returns {{ title: string, text: string } | null}
 */
export function cellError(cell) {
  const error = cell.outputs.find((o) => o.output_type === "error");
  if (!error) return null;
  const title = stripAnsi(`${error.ename ?? "Error"}: ${error.evalue ?? ""}`).trim();
  const traceback = stripAnsi((error.traceback ?? []).join("\n"));
  return { title, text: bounded(traceback || title, MAX_TRACEBACK, "end") };
}

/**
 * The text outputs of a cell (streams and text/plain results), bounded.
 * @param {CellData} cell
 */
function textOutputs(cell) {
  const parts = [];
  for (const out of cell.outputs) {
    if (out.output_type === "stream") parts.push(joined(out.text));
    else if (out.output_type === "execute_result" || out.output_type === "display_data") parts.push(joined(out.data?.["text/plain"]));
  }
  return bounded(stripAnsi(parts.filter(Boolean).join("\n")), MAX_OUTPUT);
}

/**
 * "Attach cell": the cell's code, its text output and its error, as one attachment.
 * @param {CellData} cell
 * @returns {Attachment}
 */
export function cellAttachment(cell) {
  const name = cellName(cell);
  const lang = cell.cell_type === "code" ? "python" : "";
  const parts = [`Notebook ${name} (${cell.cell_type}):`, "```" + lang, bounded(cell.source, MAX_CODE), "```"];
  const output = textOutputs(cell);
  if (output) parts.push("Its output:", "```", output, "```");
  const error = cellError(cell);
  if (error) parts.push("Its error:", "```", error.text, "```");
  return { kind: "cell", name, summary: parts.join("\n") };
}

/**
 * "Ask r3nb" on an error: the code and the traceback, as two chips.
 * @param {CellData} cell
 * @returns {Attachment[]}
 */
export function errorAttachments(cell) {
  const name = cellName(cell);
  const code = { kind: "cell", name, summary: [`Notebook ${name}, the code that failed:`, "```python", bounded(cell.source, MAX_CODE), "```"].join("\n") };
  const error = cellError(cell);
  if (!error) return [code];
  return [code, { kind: "error", name: error.title.split(":")[0] || "Error", summary: [`The error it raised (${error.title}):`, "```", error.text, "```"].join("\n") }];
}

/**
 * Decoded bytes of base64 `data` (without decoding it).
 * @param {string} data
 */
export function base64Size(data) {
  const clean = data.replace(/\s/g, "");
  return Math.floor((clean.length * 3) / 4) - (clean.endsWith("==") ? 2 : clean.endsWith("=") ? 1 : 0);
}

/**
 * An image for the next message, or the reason it cannot be one (type, size).
 * @param {string} name
 * @param {string} mime
 * @param {string} data   base64
 * @returns {ImageUpload | string}
 */
export function imageUpload(name, mime, data) {
  const clean = data.replace(/\s/g, "");
  return imageProblem(name, mime, base64Size(clean)) ?? { kind: "image", name, mime, data: clean };
}

/**
 * Why an image of this type and size cannot be sent (null: it can).
 * @param {string} name
 * @param {string} mime
 * @param {number} size   decoded bytes
 */
export function imageProblem(name, mime, size) {
  if (!IMAGE_MIMES.has(mime)) return `${name} is ${mime || "of an unknown type"}: only PNG, JPEG, GIF and WebP images can be sent`;
  if (size > MAX_IMAGE_BYTES) return `${name} has ${(size / 1048576).toFixed(1)} MB: at most ${MAX_IMAGE_BYTES / 1048576} MB per image`;
  return null;
}

/**
 * The image outputs of a cell (a matplotlib plot is image/png), each an image to send,
 * or the reason one cannot be.
 * @param {CellData} cell
 * @returns {(ImageUpload | string)[]}
 */
export function cellImages(cell) {
  const found = [];
  for (const out of cell.outputs) {
    const data = out.data ?? {};
    const mime = ["image/png", "image/jpeg"].find((m) => typeof data[m] !== "undefined");
    if (mime) found.push({ mime, data: joined(data[mime]) });
  }
  const name = cellName(cell);
  return found.map((f, i) => imageUpload(found.length > 1 ? `plot ${i + 1} of ${name}` : `plot of ${name}`, f.mime, f.data));
}

/**
 * Whether `value` has the shape of a cell from the extension (it comes through an event).
 * @param {unknown} value
 * @returns {value is CellData}
 */
export function isCellData(value) {
  const v = /** @type {Record<string, unknown>} */ (value);
  return !!v && typeof v === "object" && typeof v.source === "string" && typeof v.cell_type === "string" && Array.isArray(v.outputs) && typeof v.index === "number";
}
