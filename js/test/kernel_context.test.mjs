// `@name` in the panel: which names a prompt mentions (code is left alone), the name being
// typed at the caret, questions to the kernel matched by id and bounded in time, and the
// completion list taking a name with the keyboard.

import assert from "node:assert/strict";
import { test } from "node:test";
import { makeDom } from "../testing/jsdom_env.mjs";

const dom = makeDom("<!doctype html><body></body>", { url: "https://lab.example/lab" });
globalThis.document = dom.window.document;
globalThis.window = dom.window;
globalThis.AbortController = dom.window.AbortController; // jsdom accepts only its own signals
const { KernelContext, mentions, typedMention } = await import("../src/kernel_context.js");
const { MentionCompleter } = await import("../src/mention_complete.js");

/** A widget model whose "kernel" answers with `answer(request)`, or never (undefined). */
function fakeModel(answer) {
  const listeners = new Set();
  const sent = [];
  return {
    sent,
    on: (name, cb) => name === "msg:custom" && listeners.add(cb),
    off: (name, cb) => listeners.delete(cb),
    send(content) {
      sent.push(content);
      const reply = answer(content);
      if (reply) setTimeout(() => { for (const cb of listeners) cb({ type: "context-reply", id: content.id, ...reply }); }, 1);
    },
  };
}

test("mentions are names after @, each once, outside code, not in e-mail addresses", () => {
  assert.deepEqual(mentions("Why does @df differ from @df2 and @df? mail a@b.com"), ["df", "df2"]);
  assert.deepEqual(mentions("`@x` and ```\n@y\n``` but @z"), ["z"]);
  assert.deepEqual(mentions("no names here"), []);
});

test("the name being typed is the one the caret ends", () => {
  assert.deepEqual(typedMention("look at @d", 10), { start: 8, prefix: "d" });
  assert.deepEqual(typedMention("@", 1), { start: 0, prefix: "" });
  assert.equal(typedMention("a@b", 3), null);
  assert.equal(typedMention("@df ", 4), null);
});

test("answers are matched by id; a kernel that does not answer in time is busy", async () => {
  const controller = new AbortController();
  const model = fakeModel((req) => (req.op === "resolve" ? { ok: true, attachments: [{ kind: "variable", name: "x", summary: "Variable `x`: int" }] } : undefined));
  const context = new KernelContext(model, controller.signal);
  const ok = await context.resolve("about @x", 1000);
  assert.equal(ok.ok, true);
  assert.equal(ok.reply.attachments[0].name, "x");
  assert.deepEqual(model.sent[0], { type: "context", id: model.sent[0].id, op: "resolve", prompt: "about @x" });
  const busy = await context.complete("x", 20);
  assert.equal(busy.ok, false);
  assert.equal(busy.busy, true);
  assert.match(busy.error, /did not answer within 0.02 s/);
  controller.abort();
});

test("an unknown name comes back as the kernel's sentence, not as busy", async () => {
  const controller = new AbortController();
  const model = fakeModel(() => ({ ok: false, error: "@nope: no variable named nope in the kernel" }));
  const answer = await new KernelContext(model, controller.signal).resolve("@nope", 1000);
  assert.deepEqual(answer, { ok: false, busy: false, error: "@nope: no variable named nope in the kernel" });
  controller.abort();
});

test("the completion list offers the kernel's names and Tab takes the chosen one", async () => {
  const controller = new AbortController();
  const model = fakeModel((req) => ({ ok: true, names: [{ name: `${req.prefix}f`, type: "pandas.DataFrame" }, { name: `${req.prefix}f2`, type: "int" }] }));
  const input = document.createElement("textarea");
  document.body.append(input);
  const completer = new MentionCompleter(document, input, new KernelContext(model, controller.signal), controller.signal);
  document.body.append(completer.list);
  input.value = "why @d";
  input.setSelectionRange(6, 6);
  input.dispatchEvent(new dom.window.Event("input"));
  while (completer.list.hidden) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual([...completer.list.querySelectorAll("[role=option]")].map((o) => o.textContent), ["@dfpandas.DataFrame", "@df2int"]);
  const key = (k) => {
    const e = new dom.window.KeyboardEvent("keydown", { key: k, cancelable: true });
    return completer.onKeyDown(e) && e.defaultPrevented;
  };
  assert.equal(key("ArrowDown"), true);
  assert.equal(key("Tab"), true);
  assert.equal(input.value, "why @df2 ");
  assert.equal(completer.list.hidden, true);
  assert.equal(key("Enter"), false, "a closed list leaves Enter to Send");
  controller.abort();
});
