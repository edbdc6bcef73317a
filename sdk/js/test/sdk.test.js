// The TypeScript SDK (built into dist/) against a real Tributary, plus a fault proxy in front of it.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, describe, test } from "node:test";

import {
  AuthenticationError,
  NotFound,
  PermissionDenied,
  QueueFull,
  Tributary,
  TributaryError,
  ValidationError,
} from "../dist/index.js";
import { eventually, freePort, startTributary } from "./server.js";

const quiet = { warn() {}, error() {} };
let server;
let n = 0;
const tag = () => `js${Date.now().toString(36)}${(n++).toString(36)}`;

const tryGet = async (client, ref) => {
  try {
    return await client.customers.get(ref);
  } catch (error) {
    if (error instanceof NotFound) return null;
    throw error;
  }
};

const collect = async (iterable) => {
  const out = [];
  for await (const item of iterable) out.push(item);
  return out;
};

before(async () => {
  server = await startTributary();
});

after(async () => {
  await server?.stop();
});

describe("against a real Tributary", () => {
  test("batched identify/ping are stored after flush, with the call time", async () => {
    const t = tag();
    const errors = [];
    const client = new Tributary(server.key, { baseUrl: server.url, onError: (e) => errors.push(e) });
    const reader = new Tributary(server.key, { baseUrl: server.url, sync: true });
    const before = new Date();
    for (let i = 0; i < 30; i++) {
      assert.equal(await client.identify(`${t}-${i}@example.com`, { status: "trial", params: { i, t } }), null);
    }
    await client.ping(`${t}-0@example.com`);
    await client.flush();
    assert.equal(client.queued, 0);
    assert.deepEqual(errors, []);
    const all = await eventually(async () => {
      const found = await collect(reader.customers.list({ params: { t }, pageSize: 7 }));
      return found.length === 30 ? found : null;
    });
    const last = all.find((c) => c.email === `${t}-29@example.com`);
    assert.equal(last.projects.default.status, "trial");
    assert.deepEqual(last.projects.default.params, { i: 29, t });
    assert.ok(new Date(last.last_activity_at) >= new Date(before.getTime() - 1000));
    assert.ok(await client.shutdown());
  });

  test("batches go out by size and by time without flush", async () => {
    const t = tag();
    const bySize = new Tributary(server.key, { baseUrl: server.url, batchSize: 5, flushInterval: 600_000 });
    for (let i = 0; i < 5; i++) await bySize.identify(`${t}-size-${i}@example.com`);
    const byTime = new Tributary(server.key, { baseUrl: server.url, flushInterval: 200 });
    await byTime.identify(`${t}-time@example.com`);
    const reader = new Tributary(server.key, { baseUrl: server.url, sync: true });
    await eventually(() => tryGet(reader, `${t}-size-4@example.com`), 10_000);
    await eventually(() => tryGet(reader, `${t}-time@example.com`), 10_000);
    assert.equal(bySize.queued + byTime.queued, 0);
  });

  test("sync mode returns the stored event and throws typed errors", async () => {
    const t = tag();
    const client = new Tributary(server.key, { baseUrl: server.url, sync: true });
    const first = await client.identify(`${t}@example.com`, { name: "Ada", messageId: `m-${t}` });
    assert.match(first.event_id, /^evt_/);
    assert.equal(first.duplicate, false);
    const again = await client.identify(`${t}@example.com`, { name: "Ada", messageId: `m-${t}` });
    assert.deepEqual(again, { event_id: first.event_id, duplicate: true });
    await assert.rejects(
      client.identify(`${t}@example.com`, { name: "Grace", messageId: `m-${t}` }),
      (e) => e instanceof ValidationError && e.status === 409 && e.code === "idempotency_conflict",
    );
    await assert.rejects(client.identify("not an email"), (e) => e instanceof ValidationError && e.status === 400);
    await assert.rejects(client.identify(`${t}@example.com`, { params: { x: Number.NaN } }), ValidationError);
    await assert.rejects(client.ping(`${t}@example.com`, { project: "nope" }), (e) => e instanceof NotFound && e.code === "project_not_found");
    const wrong = new Tributary("trb_wrong", { baseUrl: server.url, sync: true });
    await assert.rejects(wrong.ping(`${t}@example.com`), AuthenticationError);
    const created = await server.call("POST", "/v1/keys", { scopes: ["read"] });
    const reader = new Tributary(created.body.key, { baseUrl: server.url, sync: true });
    await assert.rejects(reader.ping(`${t}@example.com`), PermissionDenied);
    await assert.rejects(reader.customers.get(`nobody-${t}@example.com`), (e) => e instanceof NotFound && e instanceof TributaryError);
  });

  test("read API: filters, all pages, timeline, erase", async () => {
    const t = tag();
    const client = new Tributary(server.key, { baseUrl: server.url, sync: true });
    for (let i = 0; i < 5; i++) {
      await client.identify(`${t}-${i}+x@example.com`, { status: i % 2 ? "paid" : "free", params: { t } });
    }
    await eventually(async () => (await collect(client.customers.list({ params: { t }, pageSize: 2 }))).length === 5);
    const paid = await collect(client.customers.list({ project: "default", status: "paid", params: { t }, pageSize: 1 }));
    assert.deepEqual(paid.map((c) => c.email).sort(), [`${t}-1+x@example.com`, `${t}-3+x@example.com`]);
    const byQ = await collect(client.customers.list({ q: `${t}-4` }));
    assert.deepEqual(byQ.map((c) => c.email), [`${t}-4+x@example.com`]);
    assert.deepEqual(await collect(client.customers.list({ params: { t }, activeSince: new Date("2999-01-01") })), []);
    const one = await client.customers.get(`${t}-1+x@example.com`);
    assert.deepEqual(await client.customers.get(one.id), one);
    const timeline = await collect(client.customers.timeline(one.id, { pageSize: 1 }));
    assert.ok(timeline.length >= 1 && timeline[0].event !== null);
    await client.customers.erase(one.id);
    await assert.rejects(client.customers.get(one.id), NotFound);
  });

  test("batched failures go to onError, never to the caller", async () => {
    const t = tag();
    const errors = [];
    const client = new Tributary(server.key, {
      baseUrl: server.url,
      logger: quiet,
      onError: (e, messages) => errors.push([e, messages]),
    });
    await client.identify("not an email");
    await client.identify(`${t}@example.com`, { params: { bad: Number.POSITIVE_INFINITY } });
    await client.identify(`${t}@example.com`, { params: { ok: true } });
    assert.equal(await client.identify(`${t}@example.com`, { paramsUnset: 5 }), null);
    assert.equal(errors.shift()[0].code, "invalid_arguments");
    await client.flush();
    assert.equal(errors.length, 2);
    assert.ok(errors.every(([e]) => e instanceof ValidationError));
    assert.ok(await eventually(() => tryGet(client, `${t}@example.com`)));
  });
});

// Forwards to the real server, except that the n-th POST follows `script[n]`: 429 (Retry-After: 1),
// 503, "close" (hang up before forwarding) or "lost" (forward, then hang up: outcome unknown).
async function faultProxy(upstream, script) {
  const log = [];
  const answers = [];
  const proxy = createServer(async (request, response) => {
    const chunks = [];
    for await (const chunk of request) chunks.push(chunk);
    const action = script.shift() ?? "forward";
    log.push([Date.now(), action]);
    if (action === "close") return request.socket.destroy();
    if (action === "429" || action === "503") {
      response.writeHead(Number(action), { "Content-Type": "application/json", ...(action === "429" ? { "Retry-After": "1" } : {}) });
      return response.end('{"error": {"code": "busy", "message": "try later"}}');
    }
    const upstreamResponse = await fetch(upstream + request.url, {
      method: "POST",
      headers: { Authorization: request.headers.authorization, "Content-Type": "application/json" },
      body: Buffer.concat(chunks),
    });
    const text = await upstreamResponse.text();
    answers.push(JSON.parse(text));
    if (action === "lost") return request.socket.destroy();
    response.writeHead(upstreamResponse.status, { "Content-Type": "application/json" });
    response.end(text);
  });
  await new Promise((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${proxy.address().port}`, log, answers, close: () => new Promise((r) => proxy.close(r)) };
}

describe("faults", () => {
  test("nothing lost, nothing duplicated through 429, 503, resets and lost answers", async () => {
    const t = tag();
    const proxy = await faultProxy(server.url, ["429", "503", "close", "lost", "503", "lost", "close"]);
    const errors = [];
    const client = new Tributary(server.key, {
      baseUrl: proxy.url,
      batchSize: 40,
      retryBaseDelay: 50,
      logger: quiet,
      onError: (e) => errors.push(e),
    });
    for (let i = 0; i < 200; i++) await client.identify(`${t}-${i}@example.com`, { params: { t } });
    await client.flush();
    assert.deepEqual(errors, []);
    assert.equal(client.dropped, 0);
    const fresh = new Map();
    for (const answer of proxy.answers) {
      for (const result of answer.results) {
        fresh.set(result.event_id, (fresh.get(result.event_id) ?? 0) + (result.duplicate ? 0 : 1));
      }
    }
    assert.equal(fresh.size, 200);
    assert.deepEqual(new Set(fresh.values()), new Set([1]));
    assert.ok(proxy.answers.some((a) => a.results.some((r) => r.duplicate)), "a lost answer was retried");
    const at = proxy.log.findIndex(([, action]) => action === "429");
    assert.ok(proxy.log[at + 1][0] - proxy.log[at][0] >= 950, "Retry-After honoured");
    const reader = new Tributary(server.key, { baseUrl: server.url, sync: true });
    await eventually(async () => (await collect(reader.customers.list({ params: { t } }))).length === 200, 30_000);
    await proxy.close();
  });

  test("bounded memory and no error to the caller while the server is down", async () => {
    const errors = [];
    const warnings = [];
    const client = new Tributary("trb_anything", {
      baseUrl: `http://127.0.0.1:${await freePort()}`,
      batchSize: 10,
      maxQueueSize: 50,
      retryBaseDelay: 20,
      retryMaxDelay: 100,
      logger: { warn: (m) => warnings.push(m), error() {} },
      onError: (e, messages) => errors.push(...messages.map(() => e)),
    });
    for (let i = 0; i < 1000; i++) {
      await client.identify(`user-${i}@example.com`);
      assert.ok(client.queued <= 60);
    }
    assert.ok(client.dropped >= 1000 - 60);
    assert.equal(errors.filter((e) => e instanceof QueueFull).length, client.dropped);
    assert.ok(warnings.some((w) => w.includes("queue full")) && warnings.length < 15);
    const started = Date.now();
    assert.equal(await client.shutdown(300), false);
    assert.ok(Date.now() - started < 8000);
    assert.equal(errors.length, 1000);
    assert.equal(client.queued, 0);
  });
});
