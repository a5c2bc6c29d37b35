// The model picker follows a server whose models changed (a reloaded models file): it
// fetches `GET models` again when the person reaches for it, when a conversation opens,
// and when the server names a model it lacks; never on a timer, never twice at once.

import assert from "node:assert/strict";
import { test } from "node:test";
import { makeDom } from "../testing/jsdom_env.mjs";

const dom = makeDom("<!doctype html><body></body>", { url: "https://lab.example/lab" });
globalThis.document = dom.window.document;
globalThis.AbortController = dom.window.AbortController;
const { ModelPicker, REFRESH_MS } = await import("../src/models.js");

/** A transport whose `GET models` answers `server.models`, counting the requests. */
function fakeServer(names, defaultName) {
  const server = {
    names, defaultName, requests: 0,
    transport: {
      kind: "direct",
      async request(method, path) {
        assert.equal(`${method} ${path}`, "GET models");
        server.requests += 1;
        const models = server.names.map((name) => ({ name, model: `openai/${name}`, description: "", ready: true, reason: null }));
        return { status: 200, body: { models, default: server.defaultName, revision: 0 }, retryAfter: null };
      },
      stream() { throw new Error("unused"); },
      close() {},
    },
  };
  return server;
}

function picker(server, current = "") {
  const controller = new AbortController();
  return new ModelPicker(document, {
    transport: () => server.transport,
    signal: controller.signal,
    current: () => current,
    defaultModel: () => "",
    onConversation: () => {},
    setStatus: () => {},
  });
}

const names = (select) => [...select.options].map((o) => o.value);
const settled = () => new Promise((resolve) => setTimeout(resolve, 0));

test("reaching for the picker fetches the list again, at most once every REFRESH_MS", async () => {
  const server = fakeServer(["a", "b"], "a");
  const models = picker(server);
  await models.load();
  assert.deepEqual(names(models.select), ["a", "b"]);
  models.select.value = "b"; // a draft's choice, not stored anywhere yet

  server.names = ["a", "b", "c"];
  models.select.dispatchEvent(new dom.window.Event("focus"));
  await settled();
  assert.equal(server.requests, 1, "just loaded: no second request");

  models.loadedAt = Date.now() - REFRESH_MS; // as if REFRESH_MS had passed
  models.select.dispatchEvent(new dom.window.Event("pointerdown"));
  models.select.dispatchEvent(new dom.window.Event("focus"));
  await settled();
  assert.equal(server.requests, 2, "one request for both events");
  assert.deepEqual(names(models.select), ["a", "b", "c"]);
  assert.equal(models.select.value, "b", "the person's choice stays");

  models.loadedAt = 0;
  server.names = ["a", "c"]; // b removed: the default shows
  models.refresh();
  await settled();
  assert.deepEqual(names(models.select), ["a", "c"]);
  assert.equal(models.select.value, "a");
});

test("a conversation naming a model the list lacks fetches it once, and shows it", async () => {
  const server = fakeServer(["a"], "a");
  const models = picker(server, "c1");
  await models.load();
  server.names = ["a", "new"];
  const header = { id: "c1", title: "t", author: null, created_at: 1, updated_at: 1, revision: 2, message_count: 0, model: "new", system_prompt: null, head_id: null };
  models.note(header); // just loaded, still fetched: the list is known to be stale
  await settled();
  assert.equal(server.requests, 2);
  assert.deepEqual(names(models.select), ["a", "new"]);
  assert.equal(models.select.value, "new");

  models.note({ ...header, model: "gone", revision: 3 });
  models.note({ ...header, model: "new", revision: 4 });
  models.note({ ...header, model: "gone", revision: 5 });
  await settled();
  assert.equal(server.requests, 3, "one request for an unknown name, however often it comes");
});
