// Wire shapes, mirrored from r3nb/protocol.py (the single source of truth).
// Keep field names and meanings identical; change them there first.
//
// Text offsets count Unicode code points (Python `str` indices), never UTF-16 units:
// use `codePointLength` / `codePointSlice` below, not `.length` / `.slice`.

/** @typedef {"streaming" | "complete" | "error" | "cancelled"} Status */
/** @typedef {"user" | "assistant" | "system"} Role */

/**
 * Context attached to a user message, e.g. a kernel variable named with `@name`.
 * @typedef {object} Attachment
 * @property {string} kind      "variable"
 * @property {string} name
 * @property {string} summary   the bounded text that was sent to the model
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
 * @property {string | null} source          "browser", "kernel" or "embedded"
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
 * @property {string[]} [siblings]          it and its other versions (same parent), oldest first; only when several
 */

/**
 * A message in a snapshot. When the client named it in `from=MID:N`, `offset` is N and
 * `content` holds only the text after code point N.
 * @typedef {MessageDict & { offset?: number }} SnapshotMessage
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
 * @property {string | null} [system_prompt]
 * @property {string | null} head_id  the last message of the current branch (null: empty, e.g. cleared)
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
 * @typedef {object} ModelInfo
 * @property {string} name
 * @property {string} [model]
 * @property {string} [description]
 */

/** @typedef {{ models: ModelInfo[], default: string | null }} ModelsReply */

/**
 * `PATCH conversations/{cid}` `{title?, model?}`: renames and/or stores the model its next
 * replies use (400 for an unknown model). Answers `{conversation}`.
 * @typedef {object} ConversationUpdate
 * @property {string} [title]
 * @property {string} [model]
 */

/**
 * 409 from `POST conversations/{cid}/messages`: a reply is still being written there.
 * @typedef {object} ConflictReply
 * @property {string} error        names who asked; says to wait or stop it
 * @property {string} message_id   the reply in the way
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
// Each answers 409 ConflictReply while a reply in the conversation is being written.

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

/** @typedef {"start" | "delta" | "done" | "error"} SseEventName */

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
 * @typedef {{ type: "response", id: string, status: number, body: any }} CommResponse
 */

/**
 * Python → JS: one SSE event of a streaming request; `end` closes it.
 * @typedef {{ type: "event", id: string, event: string, data: any }} CommEvent
 */

/** @typedef {{ type: "end", id: string }} CommEnd */

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
