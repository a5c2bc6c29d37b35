// Wire shapes and constants, mirrored from r3nb/protocol.py (the single source of truth).
// Keep field names and meanings identical; change them there first.
// tests/test_wire_contract.py fails when a typedef here and a TypedDict there differ in
// name, fields or optionality (`[name]`), or an exported constant in value.
//
// Text offsets count Unicode code points (Python `str` indices), never UTF-16 units:
// use `codePointLength` / `codePointSlice` below, not `.length` / `.slice`.

/** @typedef {"streaming" | "complete" | "error" | "cancelled"} Status */
/** @typedef {"user" | "assistant" | "system"} Role */
/**
 * Who made the call: a person through the HTTP API (the panel), a kernel with the kernel
 * secret (`%%chat`, `r3nb.chat()`), or the engine inside a kernel (embedded mode).
 * @typedef {"user" | "kernel" | "embedded"} Source
 */
/** A person's mark on a message: always sent to the model, or never.
 * @typedef {"pinned" | "excluded"} ContextMark */

/** Seconds between `: ping` comments on a quiet event stream. */
export const SSE_HEARTBEAT_SECONDS = 10;
/** No byte (not even a heartbeat) for this long: the stream is dead; poll instead. */
export const STALL_SECONDS = 30;

/**
 * Context attached to a user message, e.g. a kernel variable named with `@name`.
 * @typedef {object} Attachment
 * @property {string} kind      "variable", "cell", "output", "image"
 * @property {string} name
 * @property {string} [summary] text kinds: the bounded text that was sent to the model
 * @property {string} [id]      image: the attachment row (GET attachments/{id})
 * @property {string} [mime]    image: image/png, image/jpeg, image/gif or image/webp
 * @property {number} [size]    image: bytes
 */

/** Images a model is sent: types accepted (by their bytes; never SVG), decoded bytes each, images per message. */
export const IMAGE_MIMES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);
export const MAX_IMAGE_BYTES = 5_242_880;
export const MAX_IMAGES = 4;

/**
 * An image in a request's `attachments` (POST …/messages); stored as an Attachment of kind "image".
 * @typedef {object} ImageUpload
 * @property {"image"} kind
 * @property {string} name
 * @property {string} mime      as the page read it; the server sniffs the bytes and must agree
 * @property {string} data      base64 of the image's bytes
 */

/**
 * @typedef {object} MessageDict
 * @property {string} id
 * @property {string} conversation_id
 * @property {number} seq
 * @property {Role} role
 * @property {string} content
 * @property {Status} status
 * @property {string | null} model
 * @property {string | null} author
 * @property {Source | null} source          who made the call
 * @property {string | null} streaming_for   kernel id of the panel/kernel that sent the prompt
 * @property {string | null} error
 * @property {number | null} prompt_tokens
 * @property {number | null} completion_tokens
 * @property {number | null} cost
 * @property {Attachment[]} attachments
 * @property {number} created_at             epoch seconds
 * @property {number} updated_at
 * @property {number} revision
 * @property {string | null} parent_id      the message it follows (null: a first message)
 * @property {ContextMark | null} context    pinned: always sent to the model; excluded: never
 * @property {number | null} context_left_out  on a reply: earlier messages left out to fit the context window
 * @property {string[]} [siblings]          it and its other versions (same parent), oldest first; only when several
 */

/**
 * A message in a snapshot. When the client named it in `from=MID:N`, `offset` is N and
 * it holds only a MessageUpdate's fields, `content` being the text after code point N.
 * @typedef {MessageDict & { offset?: number }} SnapshotMessage
 */

/**
 * What a SnapshotMessage with `offset` holds: the fields that change while it streams.
 * @typedef {object} MessageUpdate
 * @property {string} id
 * @property {Status} status
 * @property {string | null} error
 * @property {number | null} prompt_tokens
 * @property {number | null} completion_tokens
 * @property {number | null} cost
 * @property {number} updated_at
 * @property {number} revision
 * @property {ContextMark | null} context
 * @property {string} content   the text after code point `offset`
 * @property {number} offset
 */

/**
 * @typedef {object} ConversationDict
 * @property {string} id
 * @property {string} title
 * @property {string | null} author
 * @property {number} created_at
 * @property {number} updated_at
 * @property {number} revision
 * @property {number} message_count
 * @property {string | null} model   the model it last used or was set to (PATCH), null: the default
 * @property {string | null} system_prompt   its own system prompt (null: its model's)
 * @property {string | null} head_id  the last message of the current branch (null: empty, e.g. cleared)
 */

/**
 * `GET usage/report` (admins): one person's replies from one model on one UTC day.
 * @typedef {object} UsageRow
 * @property {string} day   YYYY-MM-DD, UTC
 * @property {string} person
 * @property {string} model
 * @property {number} replies
 * @property {number} prompt_tokens
 * @property {number} completion_tokens
 * @property {number} cost
 */

/**
 * `GET audit` (admins): one prompt sent to a model, and how its reply ended.
 * @typedef {object} AuditRow
 * @property {number} at   when the reply was admitted (Unix seconds)
 * @property {string} person
 * @property {Source | null} source
 * @property {string} conversation_id
 * @property {string} message_id   the reply
 * @property {string | null} model
 * @property {Status} status
 * @property {number | null} prompt_tokens
 * @property {number | null} completion_tokens
 * @property {number | null} cost
 * @property {string} prompt   cut at 500 characters
 */

/**
 * `GET conversations?limit=N&cursor=C&q=TEXT`: one page, most recently active first.
 * `limit` defaults to 100 (at most 500); `q` matches titles or message text
 * (case-insensitive); `cursor` is the previous page's `next_cursor`.
 * @typedef {object} ConversationPage
 * @property {ConversationDict[]} conversations
 * @property {string | null} next_cursor   opaque; null on the last page
 */

/**
 * `GET conversations/{cid}?since=REV`: what changed after REV.
 * @typedef {object} Snapshot
 * @property {ConversationDict | null} conversation  null: unchanged since `since`
 * @property {string[] | null} branch       the current branch's ids, in order, whenever `conversation`
 *   is given (null otherwise): drop held messages not in it; one held nowhere → load again without `since`
 * @property {SnapshotMessage[]} messages   of the current branch, ordered by seq
 * @property {number} revision              pass back as `since` next time
 * @property {boolean} streaming            any message of the conversation still streaming
 */

/**
 * `POST conversations` (201), `PATCH conversations/{cid}`, `POST …/head`, `POST …/clear`.
 * @typedef {object} ConversationReply
 * @property {ConversationDict} conversation
 */

/**
 * `POST messages/{mid}/cancel`: the message as it ended.
 * @typedef {object} MessageReply
 * @property {MessageDict} message
 */

/**
 * @typedef {object} ModelInfo
 * @property {string} name
 * @property {string} model          the provider's model id, e.g. "openai/gpt-4o-mini"
 * @property {string} description
 * @property {boolean} ready         false: `reason` says why it cannot answer now
 * @property {string | null} reason
 * @property {boolean} images        takes images (attached plots, pasted images)
 */

/**
 * `GET models` (never a key).
 * @typedef {object} ModelsReply
 * @property {ModelInfo[]} models
 * @property {string} default
 * @property {number} revision       +1 at each reload of the models file that changes them
 */

/**
 * The models file as last read (`models_file` of `GET health` and `POST models/reload`).
 * @typedef {object} ModelsFileState
 * @property {string} path
 * @property {number | null} loaded_at   when its content was last applied (null: never)
 * @property {string | null} error       why the file as it is now is not applied
 */

/**
 * `POST models/reload`: the file read again and applied (422 ErrorBody when it cannot be).
 * @typedef {ModelsReply & { changed: boolean, models_file: ModelsFileState }} ModelsReloadReply
 */

/**
 * `PATCH conversations/{cid}` `{title?, model?, system_prompt?}`: renames, stores the model
 * its next replies use (400 for an unknown model), sets its own system prompt ("" clears
 * it). Answers ConversationReply.
 * @typedef {object} ConversationUpdate
 * @property {string} [title]
 * @property {string} [model]
 * @property {string} [system_prompt]
 */

/**
 * Every 4xx/5xx body. 409 (a reply in this conversation is still being written) names the
 * reply in the way; 429 and 503 say when to retry (also in the Retry-After header).
 * @typedef {object} ErrorBody
 * @property {string} error          for a person: names who asked, says to wait or stop it
 * @property {string} [message_id]   409: the reply in the way
 * @property {number} [retry_after]  429, 503: seconds
 */

// --- Branches ---
//
// POST conversations/{cid}/messages/{mid}/edit  {content, model?, kernel_id?, attachments?}
//   edit and resend: a new version of user message `mid`; streams like posting a message.
// POST conversations/{cid}/messages/{mid}/regenerate  {model?, kernel_id?}
//   a new version of reply `mid`; streams (`start.user_message` is null).
// POST conversations/{cid}/head  {message_id}  → {conversation}: the branch through it, down
//   to the newest message under it (the ‹ › switcher).
// POST conversations/{cid}/clear  → {conversation}: an empty branch; nothing is deleted.
// DELETE conversations/{cid}/messages/{mid}  → DeleteTurnReply: prompt `mid` and its replies.
// Each answers 409 ErrorBody (with message_id) while a reply in the conversation is being written.

/**
 * @typedef {object} HeadRequest
 * @property {string} message_id
 */

/**
 * @typedef {object} DeleteTurnReply
 * @property {ConversationDict} conversation
 * @property {string[]} deleted   the prompt and every version of its reply
 */

// --- SSE events (POST conversations/{cid}/messages, GET messages/{mid}/stream) ---

/**
 * @typedef {object} StartEvent
 * @property {MessageDict | null} user_message   null on GET messages/{mid}/stream and on regenerate
 * @property {MessageDict} assistant_message
 * @property {number} [context_left_out]  earlier turns left out to fit the model's context
 *   window (0: all sent); only on a new reply, not on GET messages/{mid}/stream
 * @property {boolean} [context_pinned_over_budget]  the pinned messages alone exceed that window (sent anyway)
 */

/**
 * @typedef {object} DeltaEvent
 * @property {string} message_id
 * @property {number} offset   code point offset of `text` within the message content
 * @property {string} text
 */

/**
 * @typedef {object} DoneEvent
 * @property {MessageDict} message   final status, error, usage
 */

/**
 * The `error` event: a failure after the stream's headers were sent (before them, the
 * request gets an ErrorBody with its status instead).
 * @typedef {object} StreamError
 * @property {string} error
 */

/**
 * `snapshot` (a Snapshot) comes only on GET conversations/{cid}/watch, whose stream is
 * `snapshot` and `delta` events (and `error` when the conversation is deleted): what a
 * poll `since=REV&from=…` would return, pushed at the snapshot cadence.
 * @typedef {"start" | "delta" | "done" | "error" | "snapshot"} SseEventName
 */

// --- Comm relay between the widget and its kernel ---

/**
 * JS → Python. Mirrors an HTTP call on the API, relative to `api/`.
 * @typedef {object} CommRequest
 * @property {"request"} type
 * @property {string} id
 * @property {"GET" | "POST" | "PATCH" | "DELETE"} method
 * @property {string} path
 * @property {unknown} body
 */

/**
 * Python → JS: the reply to a request that is not a stream.
 * @typedef {object} CommResponse
 * @property {"response"} type
 * @property {string} id
 * @property {number} status
 * @property {any} body
 */

/**
 * Python → JS: one SSE event of a streaming request; `end` closes it.
 * @typedef {object} CommEvent
 * @property {"event"} type
 * @property {string} id
 * @property {string} event
 * @property {any} data
 */

/**
 * @typedef {object} CommEnd
 * @property {"end"} type
 * @property {string} id
 */

/** @typedef {CommResponse | CommEvent | CommEnd} CommReply */

export const FINAL_STATUSES = new Set(["complete", "error", "cancelled"]);

/**
 * Length in Unicode code points, matching Python's `len(str)`.
 * @param {string} text
 */
export function codePointLength(text) {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    // A high surrogate followed by a low one is one code point.
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
    n++;
  }
  return n;
}

/**
 * `text` from code point `start` on (Python's `text[start:]`).
 * @param {string} text
 * @param {number} start
 */
export function codePointSlice(text, start) {
  if (start <= 0) return text;
  let seen = 0;
  for (let i = 0; i < text.length; i++) {
    if (seen === start) return text.slice(i);
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
    seen++;
  }
  return "";
}
